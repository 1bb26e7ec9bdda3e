"""Inference: sliding-window prediction whose masks keep the input's exact voxel grid.

The image goes through the training pre-processing (RAS orientation, resampling, intensity,
foreground crop); the class probabilities are mapped back with :class:`monai.transforms.Invertd`
(linear interpolation of probabilities, then argmax, which is smoother than inverting a label
map with nearest neighbour), and the mask is written with the input file's own NIfTI header, so
shape, affine, qform/sform and orientation are those of the input.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from medseg.data.datalist import NIFTI_SUFFIXES, case_id
from medseg.errors import InputError
from medseg.utils.files import atomic_path

__all__ = ["LoadedModel", "load_model", "read_checkpoint", "predict", "predict_volume", "find_inputs"]

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    network: torch.nn.Module
    config: dict[str, Any]
    labels: dict[int, str]
    modality: str
    checkpoint: Path


def read_checkpoint(model: str | Path) -> tuple[Path, dict[str, Any]]:
    """The training checkpoint of a run directory (``best.pt``, else the newest readable) or file."""
    from medseg.handlers.checkpoint import latest_checkpoint, load_checkpoint

    p = Path(model)
    if p.is_dir():
        best = p / "checkpoints" / "best.pt"
        if best.is_file():
            path, payload = best, load_checkpoint(best)
        else:
            found = latest_checkpoint(p / "checkpoints") if (p / "checkpoints").is_dir() else None
            if not found:
                raise InputError(f"--model {p}: no checkpoint found in {p / 'checkpoints'}")
            path, payload = found
    elif p.is_file():
        path, payload = p, load_checkpoint(p)
    else:
        raise InputError(f"--model {p}: no such file or directory")
    if "model" not in payload or "config" not in payload:
        raise InputError(f"{path}: not a medseg training checkpoint (needs 'model' and 'config' entries)")
    return path, payload


def load_model(model: str | Path, device: torch.device) -> LoadedModel:
    """Network, training config and label names from a run directory or checkpoint file."""
    from medseg.engine.network import build_network

    path, payload = read_checkpoint(model)
    cfg = payload["config"]
    labels = {int(k): v for k, v in payload.get("labels", {}).items()}
    num_classes = max(labels) + 1 if labels else payload["model"][next(reversed(payload["model"]))].shape[0]
    net = build_network(num_classes, channels=cfg["channels"], strides=cfg["strides"],
                        num_res_units=cfg["num_res_units"])
    net.load_state_dict(payload["model"])
    return LoadedModel(net.to(device).eval(), cfg, labels, str(payload.get("modality", "CT")), path)


def find_inputs(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_file():
        if not p.name.endswith(NIFTI_SUFFIXES):
            raise InputError(f"--input {p}: not a NIfTI file (.nii or .nii.gz)")
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(NIFTI_SUFFIXES))
        if not files:
            from medseg.data.dicom import dicom_series_ids

            if dicom_series_ids(p):  # a DICOM series folder is one case
                return [p]
            raise InputError(f"--input {p}: folder holds no .nii/.nii.gz files and no DICOM series")
        seen: dict[str, Path] = {}
        for f in files:  # a.nii and a.nii.gz would both write a.nii.gz
            if case_id(f) in seen:
                raise InputError(f"--input {p}: {seen[case_id(f)].name} and {f.name} are the same case "
                                 f"'{case_id(f)}'; keep one")
            seen[case_id(f)] = f
        return files
    raise InputError(f"--input {p}: no such file or directory")


def predict_volume(model: LoadedModel, image_path: Path, device: torch.device, amp: bool = False,
                   overlap: float = 0.5, sw_batch_size: int = 4) -> np.ndarray:
    """Integer label map on the voxel grid of ``image_path`` (same shape, same orientation)."""
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import Invertd

    from medseg.data.pipeline import PipelineConfig, inference_transforms

    cfg = model.config
    pcfg = PipelineConfig(pixdim=tuple(cfg["pixdim"]), patch_size=tuple(cfg["patch_size"]),
                          num_classes=max(model.labels) + 1 if model.labels else 2,
                          modality=model.modality, hu_window=tuple(cfg["hu_window"]))
    pre = inference_transforms(pcfg)
    try:
        data = pre({"image": str(image_path)})
    except Exception as exc:  # unreadable or malformed image: user input problem
        raise InputError(f"{image_path}: cannot be read as a 3D image ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]})") from None
    if data["image"].ndim != 4:
        raise InputError(f"{image_path}: expected a 3D single-channel image, got shape {tuple(data['image'].shape)}")
    inferer = SlidingWindowInferer(roi_size=pcfg.patch_size, sw_batch_size=sw_batch_size, overlap=overlap,
                                   mode="gaussian")
    with torch.no_grad(), torch.autocast(device.type, enabled=amp and device.type == "cuda"):
        logits = inferer(data["image"].unsqueeze(0).to(device), model.network)
    data["pred"] = torch.softmax(logits.float(), dim=1)[0].cpu()
    data["image"] = data["image"].cpu()
    inverted = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)(data)
    return torch.argmax(inverted["pred"], dim=0).numpy().astype(np.uint8)


def _write_mask(mask: np.ndarray, reference: Path, out_path: Path) -> None:
    ref = nib.load(str(reference))
    if tuple(ref.shape[:3]) != mask.shape:
        raise RuntimeError(f"inverted mask shape {mask.shape} differs from input {ref.shape} for {reference}")
    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    img = nib.Nifti1Image(mask, ref.affine, header=header)
    img.header.set_slope_inter(1.0, 0.0)
    qform, qcode = ref.get_qform(coded=True)
    sform, scode = ref.get_sform(coded=True)
    img.set_qform(qform if qform is not None else ref.affine, code=int(qcode) if qform is not None else 0)
    img.set_sform(sform if sform is not None else ref.affine, code=int(scode) if sform is not None else 0)
    with atomic_path(out_path) as tmp:
        nib.save(img, str(tmp))


def predict(model: str | Path, inputs: str | Path, output_dir: str | Path, device: str = "auto",
            amp: bool = False, overlap: float = 0.5, sw_batch_size: int = 4,
            loaded: LoadedModel | None = None) -> list[Path]:
    """Predict every NIfTI file of ``inputs`` into ``output_dir`` (``<case_id>.nii.gz`` each).

    ``inputs`` is a NIfTI file, a folder of them, or a folder holding one DICOM series (its mask is
    ``<folder name>.nii.gz``, on the series' voxel grid).
    """
    from tqdm import tqdm

    from medseg.engine.network import resolve_device

    if not 0 <= overlap < 1:
        raise InputError(f"--overlap must be in [0, 1), got {overlap}")
    if sw_batch_size < 1:
        raise InputError(f"--sw-batch-size must be >= 1, got {sw_batch_size}")
    dev = resolve_device(device)
    lm = loaded or load_model(model, dev)  # a wrong --model is reported before the inputs are scanned
    files = find_inputs(inputs)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {out}: exists and is not a folder")
    written = []
    for path in tqdm(files, desc="predict", unit="case", disable=len(files) < 2):
        with tempfile.TemporaryDirectory() as tmp:
            image = path
            if path.is_dir():  # DICOM series: converted once, the mask takes the converted geometry
                from medseg.data.dicom import dicom_series_to_nifti

                image = dicom_series_to_nifti(path, Path(tmp) / f"{path.name}.nii.gz")
            mask = predict_volume(lm, image, dev, amp=amp, overlap=overlap, sw_batch_size=sw_batch_size)
            target = out / f"{case_id(image)}.nii.gz"
            _write_mask(mask, image, target)
        written.append(target)
    return written
