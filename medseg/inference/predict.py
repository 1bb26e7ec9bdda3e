"""Inference: sliding-window prediction of one model or an ensemble, with mirroring TTA and learned post-processing.

Each model pre-processes the image with its own plan (RAS, crop, resampling, normalisation); its
class probabilities are mapped back to the input's voxel grid with :class:`monai.transforms.Invertd`
(linear interpolation of probabilities), so models with different plans average on one grid. The
ensemble is the mean of the members' probabilities (softmax, or sigmoid for region outputs);
``tta`` averages the 8 mirrorings over the spatial axes, as nnU-Net. The label map is the argmax
(regions: painted in ``regions_class_order``), then post-processing decided from validation
(:mod:`medseg.inference.postprocess`) unless disabled. Masks are written with the input file's own
NIfTI header: shape, affine, qform/sform and orientation are those of the input.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from medseg.data.datalist import NIFTI_SUFFIXES, case_id, group_channel_files
from medseg.errors import InputError
from medseg.plan.planner import Plan
from medseg.utils.files import atomic_path, atomic_write_text
from medseg.utils.geometry import spacing_from_affine
from medseg.utils.rundir import POSTPROCESSING_FILE, best_checkpoint, checkpoint_dir

__all__ = ["LoadedModel", "load_model", "read_checkpoint", "predict", "predict_probabilities", "find_inputs",
           "check_ensemble", "probabilities_to_labels", "mirrored_inference", "plan_of_config",
           "ensemble_probabilities"]

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    network: torch.nn.Module
    config: dict[str, Any]
    plan: Plan
    checkpoint: Path
    run_dir: Path | None

    @property
    def labels(self) -> dict[int, str]:
        return self.plan.label_spec.names


def read_checkpoint(model: str | Path) -> tuple[Path, dict[str, Any]]:
    """The training checkpoint of a run directory (``best.pt``, else the newest readable) or file."""
    from medseg.handlers.checkpoint import latest_checkpoint, load_checkpoint

    p = Path(model)
    if p.is_dir():
        best = best_checkpoint(p)
        if best.is_file():
            path, payload = best, load_checkpoint(best)
        else:
            found = latest_checkpoint(checkpoint_dir(p)) if checkpoint_dir(p).is_dir() else None
            if not found:
                raise InputError(f"--model {p}: no checkpoint found in {checkpoint_dir(p)}")
            path, payload = found
    elif p.is_file():
        path, payload = p, load_checkpoint(p)
    else:
        raise InputError(f"--model {p}: no such file or directory")
    if "model" not in payload or "config" not in payload:
        raise InputError(f"{path}: not a medseg training checkpoint (needs 'model' and 'config' entries)")
    return path, payload


def plan_of_config(config: dict[str, Any]) -> Plan:
    """The plan a training config was run with."""
    if not config.get("plan"):
        raise InputError("the checkpoint's config has no plan (trained by an older medseg); retrain it")
    return Plan.from_dict(config["plan"])


def load_model(model: str | Path, device: torch.device) -> LoadedModel:
    """Network, config and plan from a run directory or checkpoint file."""
    from medseg.plan.network import network_from_plan

    path, payload = read_checkpoint(model)
    config = payload["config"]
    plan = plan_of_config(config)
    net = network_from_plan(plan.network, plan.in_channels, plan.out_channels)
    net.load_state_dict(payload["model"])
    run_dir = Path(model) if Path(model).is_dir() else None
    return LoadedModel(net.to(device).eval(), config, plan, path, run_dir)


def check_ensemble(models: Sequence[LoadedModel], names: Sequence[str]) -> None:
    """Refuse members that cannot be averaged: different labels, regions, channels or outputs."""
    ref = models[0].plan
    for lm, name in zip(models[1:], names[1:], strict=True):
        p = lm.plan
        checks = [("labels", ref.label_spec.names, p.label_spec.names),
                  ("regions", ref.label_spec.regions, p.label_spec.regions),
                  ("channels", ref.channel_names, p.channel_names),
                  ("network outputs", ref.out_channels, p.out_channels)]
        for what, a, b in checks:
            if a != b:
                raise InputError(f"--model {name}: cannot be ensembled with {names[0]}: different {what} ({b} vs {a})")


def find_inputs(path: str | Path, num_channels: int = 1) -> list[tuple[str, Any]]:
    """NIfTI cases of ``--input``: ``(case_id, file | [file per channel])`` (DICOM: :mod:`medseg.inference.dicom_cases`)."""
    p = Path(path)
    if p.is_file():
        if not p.name.endswith(NIFTI_SUFFIXES):
            raise InputError(f"--input {p}: not a NIfTI file (.nii or .nii.gz)")
        return [(case_id(p), p)]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(NIFTI_SUFFIXES))
        if not files:
            raise InputError(f"--input {p}: folder holds no .nii/.nii.gz files and no DICOM series")
        seen: dict[str, Path] = {}
        for f in files:  # a.nii and a.nii.gz would both write a.nii.gz
            if case_id(f) in seen:
                raise InputError(f"--input {p}: {seen[case_id(f)].name} and {f.name} are the same case "
                                 f"'{case_id(f)}'; keep one")
            seen[case_id(f)] = f
        return group_channel_files(files, num_channels, where=f"--input {p}")
    raise InputError(f"--input {p}: no such file or directory")


def mirrored_inference(network: Any, x: torch.Tensor, inferer: Any, activation: Any, tta: bool) -> torch.Tensor:
    """``activation(inferer(x, network))``, averaged over the 8 mirrorings of the spatial axes with ``tta``."""
    spatial = list(range(2, x.ndim))
    flips = [()] + ([c for r in range(1, len(spatial) + 1) for c in itertools.combinations(spatial, r)] if tta else [])
    total = None
    for axes in flips:
        xi = torch.flip(x, axes) if axes else x
        p = activation(inferer(xi, network).float())
        p = torch.flip(p, axes) if axes else p
        total = p if total is None else total + p
    assert total is not None
    return total / len(flips)


def _activation(plan: Plan) -> Any:
    return torch.sigmoid if plan.label_spec.is_regions else (lambda t: torch.softmax(t, dim=1))


def _preprocess(plan: Plan, image: Any) -> tuple[Any, dict[str, Any]]:
    """``(inference transform, transformed data)`` of ``image`` (a file or one file per channel) under ``plan``."""
    from medseg.preprocessing.pipeline import inference_transforms

    pre = inference_transforms(plan)
    shown = image if isinstance(image, (str, Path)) else ", ".join(Path(f).name for f in image)
    try:
        data = pre({"image": str(image) if isinstance(image, (str, Path)) else [str(f) for f in image]})
    except Exception as exc:  # unreadable or malformed image: user input problem
        raise InputError(f"{shown}: cannot be read as a 3D image ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]})") from None
    if data["image"].ndim != 4 or data["image"].shape[0] != plan.in_channels:
        raise InputError(f"{shown}: the model expects {plan.in_channels} channel(s) "
                         f"({', '.join(plan.channel_names.values())}), got image shape {tuple(data['image'].shape)}")
    return pre, data


def _preprocessing_key(plan: Plan) -> str:
    """Members whose plans share this key see the same pre-processed image."""
    return json.dumps([plan.spacing, [vars(n) for n in plan.normalization], plan.channel_names], default=str)


def ensemble_probabilities(members: Sequence[LoadedModel], image: Any, device: torch.device, amp: bool = False,
                           overlap: float = 0.5, sw_batch_size: int = 4, tta: bool = False,
                           stitch_on_cpu: bool = False) -> torch.Tensor:
    """``(C, *input grid)`` mean of the members' probabilities for ``image``.

    The image is read and pre-processed once per distinct pre-processing (members of one
    cross-validation share it); their probabilities are averaged on that grid and mapped back once.
    Every inverted step (orientation, padding of the crop, linear resampling) is linear, so this
    equals the mean of each member's inverted probabilities.
    """
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import Invertd

    groups: dict[str, list[LoadedModel]] = {}
    for lm in members:
        groups.setdefault(_preprocessing_key(lm.plan), []).append(lm)
    total: torch.Tensor | None = None
    for group in groups.values():
        pre, data = _preprocess(group[0].plan, image)
        x = data["image"].unsqueeze(0).to(device)
        summed = None
        for lm in group:
            inferer = SlidingWindowInferer(roi_size=lm.plan.patch_size, sw_batch_size=sw_batch_size, overlap=overlap,
                                           mode="gaussian", sw_device=device,
                                           device=torch.device("cpu") if stitch_on_cpu else device)
            with torch.no_grad(), torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                probs = mirrored_inference(lm.network, x, inferer, _activation(lm.plan), tta)[0].float().cpu()
            summed = probs if summed is None else summed + probs
        data["pred"] = summed / len(group)
        data["image"] = data["image"].cpu()
        inverted = torch.as_tensor(Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)(data)
                                   ["pred"]).float() * len(group)
        total = inverted if total is None else total + inverted
    assert total is not None
    return total / len(members)


def predict_probabilities(lm: LoadedModel, image: Any, device: torch.device, amp: bool = False, overlap: float = 0.5,
                          sw_batch_size: int = 4, tta: bool = False, stitch_on_cpu: bool = False) -> torch.Tensor:
    """``(C, *input grid)`` probabilities of one model for ``image`` (a file or one file per channel)."""
    return ensemble_probabilities([lm], image, device, amp, overlap, sw_batch_size, tta, stitch_on_cpu)


def probabilities_to_labels(probs: torch.Tensor | np.ndarray, plan: Plan) -> np.ndarray:
    """Label map (uint8) of ``(C, *spatial)`` probabilities: argmax, or regions painted in order."""
    spec = plan.label_spec
    if spec.is_regions:
        from medseg.transforms.regions import regions_to_labels

        return regions_to_labels(probs, spec.regions_class_order or ())
    return torch.argmax(torch.as_tensor(probs), dim=0).numpy().astype(np.uint8)


def _write_nifti(data: np.ndarray, reference: Path, out_path: Path, dtype: Any) -> None:
    ref = nib.load(str(reference))
    if tuple(ref.shape[:3]) != tuple(data.shape[:3]):
        raise RuntimeError(f"inverted output shape {data.shape} differs from input {ref.shape} for {reference}")
    header = ref.header.copy()
    header.set_data_dtype(dtype)
    img = nib.Nifti1Image(data.astype(dtype), ref.affine, header=header)
    img.header.set_slope_inter(1.0, 0.0)
    qform, qcode = ref.get_qform(coded=True)
    sform, scode = ref.get_sform(coded=True)
    img.set_qform(qform if qform is not None else ref.affine, code=int(qcode) if qform is not None else 0)
    img.set_sform(sform if sform is not None else ref.affine, code=int(scode) if sform is not None else 0)
    with atomic_path(out_path) as tmp:
        nib.save(img, str(tmp))


def _reference(image: Any) -> Path:
    return Path(image if isinstance(image, (str, Path)) else image[0])


def predict(model: str | Path | Sequence[str | Path], inputs: str | Path, output_dir: str | Path,
            device: str = "auto", amp: bool = False, overlap: float = 0.5, sw_batch_size: int = 4, tta: bool = False,
            postprocess: bool = True, save_probabilities: bool = False, stitch_on_cpu: bool = False,
            loaded: Sequence[LoadedModel] | None = None, output_format: str = "nifti",
            series_uids: Sequence[str] | None = None, label_codes: Any = None) -> list[Path]:
    """Predict every case of ``inputs`` into ``output_dir`` (``<case_id>.nii.gz`` each).

    ``model`` is one run directory / checkpoint or several (an ensemble: their probabilities are
    averaged). ``inputs`` is a NIfTI file, a folder of them (4D files, or nnU-Net ``CASE_XXXX``
    channel files grouped per case), or DICOM: a folder at any depth (a series, a study, a PACS
    export) or a multi-frame file, each qualifying series one case, ``series_uids`` to choose
    (:mod:`medseg.inference.dicom_cases`). ``output_format``: ``nifti``, ``dicom-seg`` (DICOM
    input: ``<case_id>.seg.dcm``, segment codes from ``label_codes``) or ``both``. With
    ``save_probabilities`` the averaged probabilities go to ``probabilities/<case_id>.nii.gz``
    (float32, channels last, on the input's grid), ready to be averaged with other machines' later.
    """
    from tqdm import tqdm

    from medseg.inference import dicom_cases as dc
    from medseg.inference.postprocess import apply_postprocessing, load_postprocessing
    from medseg.plan.network import resolve_device

    if not 0 <= overlap < 1:
        raise InputError(f"--overlap must be in [0, 1), got {overlap}")
    if sw_batch_size < 1:
        raise InputError(f"--sw-batch-size must be >= 1, got {sw_batch_size}")
    names = [str(m) for m in ([model] if isinstance(model, (str, Path)) else model)]
    dev = resolve_device(device)
    members = list(loaded) if loaded else [load_model(m, dev) for m in names]  # bad --model before any input
    check_ensemble(members, names)
    plan = members[0].plan
    rules = load_postprocessing(members[0].run_dir) if postprocess and members[0].run_dir else None
    dc.check_output_format(output_format)
    dicom = dc.find_dicom_inputs(inputs, series_uids, plan.in_channels)
    if dicom is None and dc.writes_seg(output_format):
        raise InputError(f"--output-format {output_format}: DICOM SEG is written for DICOM input only; "
                         f"{inputs} is NIfTI (use --output-format nifti)")
    cases = dicom.cases if dicom else find_inputs(inputs, plan.in_channels)
    segments = dc.seg_segments(plan, label_codes, members[0].config) if dicom and dc.writes_seg(output_format) else []
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {out}: exists and is not a folder")
    written, per_series = [], {}
    for cid, source in tqdm(cases, desc="predict", unit="case", disable=len(cases) < 2):
        with tempfile.TemporaryDirectory() as tmp:
            image = source
            if dicom:  # a checked series: converted once, on its own grid
                from medseg.io.dicom_volume import write_series_nifti

                image = write_series_nifti(source, Path(tmp) / "series.nii.gz")
            probs = ensemble_probabilities(members, image, dev, amp, overlap, sw_batch_size, tta, stitch_on_cpu)
            mask = probabilities_to_labels(probs, plan)
            if rules:
                mask = apply_postprocessing(mask, rules, plan,
                                            spacing_from_affine(nib.load(str(_reference(image))).affine))
            files = [out / f"{cid}.nii.gz"] if dc.writes_nifti(output_format) else []
            for target in files:
                _write_nifti(mask, _reference(image), target, np.uint8)
            if dicom and dc.writes_seg(output_format):
                files.append(dc.write_seg(mask, source, segments, out / f"{cid}.seg.dcm", names))
            if save_probabilities:
                _write_nifti(np.moveaxis(np.asarray(probs), 0, -1), _reference(image),
                             out / "probabilities" / f"{cid}.nii.gz", np.float32)
        written += files
        if dicom:
            per_series[source.uid] = files
    if dicom:
        dc.write_series_csv(out, dicom, per_series)
    if rules and written:
        atomic_write_text(out / POSTPROCESSING_FILE, json.dumps(rules, indent=2) + "\n")
    return written
