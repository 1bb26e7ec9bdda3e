"""Robustness to another scanner: a fixed battery of acquisition shifts, each predicted and scored.

Every image of a labelled test set is shifted (:mod:`medseg.transforms.acquisition`, on the raw
intensities), written as NIfTI with the input's affine and header (float32), predicted with
:func:`medseg.inference.predict.predict` and scored with
:func:`medseg.evaluation.evaluate.evaluate_folders` against the unchanged labels; the unshifted
images are predicted and scored the same way. Reported per shift: Dice and HD95 (mm) per class, the
mean over classes and the change of the mean Dice against the unshifted test set.

The battery (strengths are fixed, so numbers compare across models and releases). CT intensities are
in HU; MR ``b`` is the mean intensity inside the nonzero (body) region of each image, where MR shifts
apply (the zero background stays zero):

==============  ==================================================  ==========================================
shift           CT                                                  MR
==============  ==================================================  ==========================================
offset          +60 HU everywhere                                   +0.1 b in the body
contrast        x1.3 about the mean of the body (HU > -500)         x1.3 about b in the body
noise           Gaussian, sd 40 HU, everywhere (low dose)           Gaussian, sd 0.05 b, in the body
blur            Gaussian, sd 1 mm in-plane (a softer kernel)        the same
thick_slices    2 slices averaged into one along the slice axis,    the same
                linearly interpolated back (same grid and affine)
bias_field      -                                                   smooth multiplicative field, within ±20%
==============  ==================================================  ==========================================

The slice axis is the voxel axis with the largest spacing (the last one on ties); in-plane means the
other two. Random draws (noise, bias field) are seeded per case from ``seed`` and the case's name.
"""

from __future__ import annotations

import logging
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.datalist import LabelSpec
from medseg.errors import InputError
from medseg.transforms import acquisition as acq

__all__ = ["Shift", "BATTERY", "shifts_for", "shift_image", "run_robustness", "UNSHIFTED"]

logger = logging.getLogger(__name__)
UNSHIFTED = "unshifted"
_NIFTI = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Shift:
    """One acquisition shift: ``apply(array, spacing, modality, rng) -> array`` on one channel ``(X, Y, Z)``."""

    name: str
    ct: str | None
    mr: str | None
    apply: Callable[[np.ndarray, Sequence[float], str, np.random.Generator], np.ndarray]

    def describe(self, modality: str) -> str:
        return str(self.ct if modality == "CT" else self.mr)


def _body(x: np.ndarray, modality: str) -> np.ndarray:
    return x > -500 if modality == "CT" else x != 0


def _scale(x: np.ndarray, modality: str) -> float:
    """MR reference intensity ``b``: the mean inside the nonzero region."""
    m = x != 0
    return float(x[m].mean()) if m.any() else 1.0


def _slice_axis(spacing: Sequence[float]) -> int:
    return max(range(3), key=lambda a: (float(spacing[a]), a))


def _offset(x, spacing, modality, rng):  # noqa: ANN001, ANN202
    if modality == "CT":
        return acq.offset(x, 60.0)
    return acq.offset(x, 0.1 * _scale(x, modality), mask=x != 0)


def _contrast(x, spacing, modality, rng):  # noqa: ANN001, ANN202
    if modality == "CT":
        out = acq.contrast(x, 1.3, mask=_body(x, modality))
        return np.where(_body(x, modality), out, x).astype(np.float32)
    return acq.contrast(x, 1.3, mask=x != 0)


def _noise(x, spacing, modality, rng):  # noqa: ANN001, ANN202
    if modality == "CT":
        return acq.add_noise(x, 40.0, rng)
    return acq.add_noise(x, 0.05 * _scale(x, modality), rng, mask=x != 0)


def _blur(x, spacing, modality, rng):  # noqa: ANN001, ANN202
    axis = _slice_axis(spacing)
    out = acq.blur(x, [0.0 if a == axis else 1.0 for a in range(3)], spacing)
    return out if modality == "CT" else np.where(x != 0, out, 0).astype(np.float32)


def _thick(x, spacing, modality, rng):  # noqa: ANN001, ANN202
    out = acq.thicker_slices(x, 2, _slice_axis(spacing))
    return out if modality == "CT" else np.where(x != 0, out, 0).astype(np.float32)


def _bias(x, spacing, modality, rng):  # noqa: ANN001, ANN202
    return acq.apply_bias_field(x, acq.bounded_bias_field(x.shape, 3, 0.2, rng), floor=0.0)


BATTERY: tuple[Shift, ...] = (
    Shift("offset", "+60 HU", "+10% of the body mean", _offset),
    Shift("contrast", "x1.3", "x1.3", _contrast),
    Shift("noise", "sd 40 HU", "sd 5% of the body mean", _noise),
    Shift("blur", "sd 1 mm in-plane", "sd 1 mm in-plane", _blur),
    Shift("thick_slices", "2x thicker slices", "2x thicker slices", _thick),
    Shift("bias_field", None, "within ±20%", _bias),
)


def shifts_for(modality: str, names: Sequence[str] | None = None) -> list[Shift]:
    """The battery's shifts for ``modality`` (``CT`` or ``MR``), or the named ones (refused if unknown there)."""
    available = [s for s in BATTERY if s.describe(modality) != "None"]
    if names is None:
        return available
    by_name = {s.name: s for s in available}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise InputError(f"--shifts {','.join(unknown)}: unknown for {modality}; choose from {', '.join(by_name)}")
    return [by_name[n] for n in names]


def shift_image(src: Path, dst: Path, shift: Shift, modality: str, seed: int) -> None:
    """Write ``src`` shifted by ``shift`` to ``dst``: same affine and header, float32, every channel (4D: last axis)."""
    import nibabel as nib

    img = nib.load(str(src))
    data = np.asarray(img.dataobj, dtype=np.float32)
    spacing = [float(z) for z in img.header.get_zooms()[:3]]
    rng = np.random.default_rng([seed, zlib.crc32(src.name.encode())])
    if data.ndim == 4:
        out = np.stack([shift.apply(data[..., c], spacing, modality, rng) for c in range(data.shape[3])], axis=-1)
    else:
        out = shift.apply(data, spacing, modality, rng)
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0
    nib.save(nib.Nifti1Image(out.astype(np.float32), img.affine, header), str(dst))


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"--images {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(_NIFTI))
    if not files:
        raise InputError(f"--images {folder}: no NIfTI images (*.nii.gz, *.nii)")
    return files


def _scores(summary: dict[str, Any]) -> dict[str, Any]:
    classes = summary["classes"]
    return {"dice": {c["name"]: c["metrics"]["dice"]["mean"] for c in classes.values()},
            "hd95": {c["name"]: c["metrics"]["hd95"]["mean"] for c in classes.values()},
            "mean_dice": summary["mean_foreground"]["dice"], "mean_hd95": summary["mean_foreground"]["hd95"]}


def _label_source(dataset: str | Path | None, labels: str | Path, spec: LabelSpec, out: Path) -> Path:
    """The ``dataset.json`` that names the labels: ``dataset``, the one found beside ``labels``, or
    ``out/labels.json`` written from the model's label specification."""
    import json

    from medseg.evaluation.evaluate import find_dataset_json

    found = Path(dataset) if dataset is not None else find_dataset_json(labels)
    if found is not None:
        return found
    out.mkdir(parents=True, exist_ok=True)
    path = out / "labels.json"
    path.write_text(json.dumps(spec.dataset_labels(), indent=2) + "\n", encoding="utf-8")
    return path


def run_robustness(models: Sequence[str | Path], images: str | Path, labels: str | Path, out: str | Path,
                   shifts: Sequence[str] | None = None, device: str = "auto", seed: int = 0, workers: int = 1,
                   modality: str | None = None, dataset: str | Path | None = None) -> dict[str, Any]:
    """Predict and score ``images`` unshifted and under each shift; write the report to ``out``.

    Class names (and region scoring for a model trained on regions) come from ``dataset`` (a folder or its
    ``dataset.json``), else from a ``dataset.json`` beside ``labels`` (``medseg evaluate``'s search), else
    from the model's plan, written to ``out/labels.json``.

    Returns (and writes as ``out/robustness.json``) ``{"modality", "cases", "models", "rows": [...]}``,
    one row per variant (``unshifted`` first): ``shift``, ``strength``, per-class ``dice`` and ``hd95``,
    ``mean_dice``, ``mean_hd95``, ``delta_mean_dice``. Also ``robustness.md``, ``robustness.html`` and
    ``robustness.png`` (:mod:`medseg.evaluation.robustness_report`).
    """
    from medseg.evaluation.evaluate import evaluate_folders, load_label_spec
    from medseg.evaluation.robustness_report import write_report
    from medseg.inference.predict import load_model, predict
    from medseg.plan.network import resolve_device

    files, out = _images(Path(images)), Path(out)
    loaded = [load_model(m, resolve_device(device)) for m in models]
    source = _label_source(dataset, labels, loaded[0].plan.label_spec, out)
    spec = load_label_spec(labels, source)
    names = loaded[0].plan.channel_names.values()
    modality = modality or ("CT" if all(str(n).upper() == "CT" for n in names) else "MR")
    chosen = shifts_for(modality, shifts)
    rows = []
    for shift in [None, *chosen]:
        name = UNSHIFTED if shift is None else shift.name
        src = Path(images)
        if shift is not None:
            src = out / "images" / name
            shutil.rmtree(src, ignore_errors=True)
            src.mkdir(parents=True)
            for f in files:
                shift_image(f, src / f.name, shift, modality, seed)
        logger.info("robustness: %s (%d cases)", name, len(files))
        pred = out / "predictions" / name
        predict([str(m) for m in models], src, pred, device=device, loaded=loaded)
        summary = evaluate_folders(pred, labels, out / "evaluation" / name, workers=workers, progress=False,
                                   dataset=source, regions=spec.is_regions)
        rows.append({"shift": name, "strength": "-" if shift is None else shift.describe(modality), **_scores(summary)})
    base = rows[0]["mean_dice"]
    for row in rows:
        row["delta_mean_dice"] = None if base is None or row["mean_dice"] is None else row["mean_dice"] - base
    result = {"modality": modality, "cases": len(files), "models": [str(m) for m in models], "seed": seed,
              "rows": rows}
    write_report(result, out)
    return result
