"""Dataset fingerprint: what a plan is derived from, with nnU-Net v2's field names and definitions.

Per case: the voxel spacing and the shape after cropping to the nonzero region of the image (any
channel). Per channel: properties of the intensities of the foreground (voxels with label > 0).
Per class: voxel counts, volumes in mm^3 and connected-component counts. Orientation codes as stored.

Conventions:

- Axes are ``x, y, z`` after reorientation to RAS (nnU-Net stores SimpleITK's ``z, y, x``); the
  values are otherwise the same quantities, so a fingerprint can be compared with nnU-Net's
  ``dataset_fingerprint.json`` by reversing its axis order.
- Foreground intensity statistics follow nnU-Net v2's rule: every case contributes the same number
  of foreground intensities (``FOREGROUND_SAMPLES // cases``, at least ``MIN_SAMPLES_PER_CASE``),
  drawn with replacement by a seeded generator, so each case weighs the same whatever its voxel
  count (pooling every voxel would let finely sampled cases dominate); mean, std, median, min, max
  and the 0.5 / 99.5 percentiles (``numpy.percentile``, linear) are computed over the pooled
  samples. Memory is bounded by ``FOREGROUND_SAMPLES`` per channel, whatever the dataset size.
- Connected components use full (26-) connectivity.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from medseg.data.datalist import Dataset
from medseg.errors import InputError

__all__ = ["extract_fingerprint", "case_fingerprint", "load_case_ras", "sample_foreground", "AXES_NOTE",
           "FOREGROUND_SAMPLES", "MIN_SAMPLES_PER_CASE"]

AXES_NOTE = "spacings and shapes are x, y, z after reorientation to RAS (nnU-Net lists z, y, x)"
FOREGROUND_SAMPLES = 10_000_000  # foreground intensities per channel over the whole dataset
MIN_SAMPLES_PER_CASE = 10_000
SEED = 1234


def sample_foreground(values: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` draws with replacement from a case's foreground intensities (none if it has no foreground)."""
    if values.size == 0:
        return values.astype(np.float32)
    return np.random.default_rng(seed).choice(values, size=count, replace=True).astype(np.float32)


def load_case_ras(image: str | Sequence[str], label: str | None = None,
                  ) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float, float], str]:
    """``(image (C, X, Y, Z) float32, label (X, Y, Z) int or None, spacing mm, orientation code)`` in RAS.

    ``image`` is one file (3D, or 4D with channels last) or one file per channel.
    """
    files = [image] if isinstance(image, str) else list(image)
    channels: list[np.ndarray] = []
    spacing: tuple[float, float, float] | None = None
    code = ""
    for f in files:
        try:
            img = nib.load(f)
        except Exception as exc:  # unreadable file: user input problem
            raise InputError(f"{f}: cannot be read ({type(exc).__name__}: {exc})") from None
        code = "".join(nib.aff2axcodes(img.affine))
        ras = nib.as_closest_canonical(img)
        data = np.asarray(ras.dataobj, dtype=np.float32)
        if data.ndim == 3:
            data = data[None]
        elif data.ndim == 4:
            data = np.moveaxis(data, -1, 0)
        else:
            raise InputError(f"{f}: expected a 3D or 4D image, got shape {data.shape}")
        channels.extend(data)
        spacing = tuple(float(z) for z in ras.header.get_zooms()[:3])  # type: ignore[assignment]
    lab = None
    if label is not None:
        lab = np.asarray(nib.as_closest_canonical(nib.load(label)).dataobj)
        lab = np.rint(lab.reshape(lab.shape[:3])).astype(np.int16)
    assert spacing is not None
    return np.stack(channels), lab, spacing, code


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    if not mask.any():
        return tuple(slice(0, s) for s in mask.shape)
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax))) for ax in range(mask.ndim)]
    return tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)


def case_fingerprint(entry: dict[str, Any], label_values: Sequence[int], samples: int | None = None,
                     seed: int = SEED) -> dict[str, Any]:
    """Fingerprint of one datalist entry; ``foreground`` holds per channel ``samples`` foreground intensities
    drawn with replacement (:func:`sample_foreground`), or all of them if ``samples`` is None."""
    image, label, spacing, code = load_case_ras(entry["image"], entry.get("label"))
    crop = _bbox((image != 0).any(axis=0))
    voxel_mm3 = float(np.prod(spacing))
    fg = label > 0 if label is not None else np.zeros(image.shape[1:], bool)
    classes: dict[str, dict[str, float]] = {}
    structure = ndimage.generate_binary_structure(3, 3)
    for v in label_values:
        if v == 0 or label is None:
            continue
        mask = label == v
        n = int(mask.sum())
        classes[str(v)] = {"voxels": n, "volume_mm3": n * voxel_mm3,
                           "components": int(ndimage.label(mask, structure)[1]) if n else 0}
    return {"case_id": entry["case_id"], "spacing": list(spacing),
            "shape_after_crop": [s.stop - s.start for s in crop], "shape": list(image.shape[1:]),
            "orientation": code, "classes": classes,
            "foreground": [c[fg] if samples is None else sample_foreground(c[fg], samples, seed + k)
                           for k, c in enumerate(image)],
            "crop_fraction": float(np.prod([s.stop - s.start for s in crop]) / np.prod(image.shape[1:]))}


def _intensity_properties(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        nan = float("nan")
        return dict.fromkeys(("mean", "median", "std", "min", "max", "percentile_99_5", "percentile_00_5"), nan)
    low, median, high = np.percentile(values, (0.5, 50.0, 99.5))  # one sorted copy, float64 results
    return {"mean": float(values.mean(dtype=np.float64)), "median": float(median),
            "std": float(values.std(dtype=np.float64)), "min": float(values.min()), "max": float(values.max()),
            "percentile_99_5": float(high), "percentile_00_5": float(low)}


def extract_fingerprint(dataset: Dataset, workers: int = 2) -> dict[str, Any]:
    """The fingerprint of ``dataset``'s training cases (nnU-Net v2 field names, RAS x, y, z axes)."""
    values = sorted(dataset.label_spec.label_values)
    n = len(dataset.training)
    samples = max(MIN_SAMPLES_PER_CASE, FOREGROUND_SAMPLES // max(n, 1))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # seeded per case: the same in any order
        cases = list(pool.map(lambda ie: case_fingerprint(ie[1], values, samples, seed=SEED + 1000 * ie[0]),
                              enumerate(dataset.training)))
    n_channels = len(cases[0]["foreground"])
    bad = [c["case_id"] for c in cases if len(c["foreground"]) != n_channels]
    if bad or n_channels != dataset.num_channels:
        raise InputError(f"{dataset.root}: cases have {n_channels} channel(s) but dataset.json declares "
                         f"{dataset.num_channels}" + (f"; differing cases: {', '.join(bad[:8])}" if bad else ""))
    per_channel = {str(c): _intensity_properties(np.concatenate([case["foreground"][c] for case in cases]))
                   for c in range(n_channels)}
    classes: dict[str, dict[str, Any]] = {}
    for v in values[1:]:
        vox = [case["classes"][str(v)]["voxels"] for case in cases]
        classes[str(v)] = {"voxels": vox, "volume_mm3": [case["classes"][str(v)]["volume_mm3"] for case in cases],
                           "components": [case["classes"][str(v)]["components"] for case in cases],
                           "fraction_of_foreground_cases": float(np.mean([n > 0 for n in vox]))}
    total = [float(np.prod(c["shape"])) for c in cases]
    return {
        "axes": AXES_NOTE,
        "case_ids": [c["case_id"] for c in cases],
        "spacings": [c["spacing"] for c in cases],
        "shapes_after_crop": [c["shape_after_crop"] for c in cases],
        "foreground_intensity_properties_per_channel": per_channel,
        "median_relative_size_after_cropping": float(np.median([c["crop_fraction"] for c in cases])),
        "class_voxels": classes,
        "class_frequency": {v: float(np.sum(classes[v]["voxels"]) / np.sum(total)) for v in classes},
        "orientations": [c["orientation"] for c in cases],
        "channel_names": {str(k): v for k, v in dataset.channel_names.items()},
    }
