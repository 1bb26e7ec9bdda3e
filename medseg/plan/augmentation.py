"""The plan's ``augmentation`` section: every training transform with its probability and range, from the data.

Rules (learnt from nnU-Net v2's ``nnUNetTrainer``: ``configure_rotation_dummyDA_mirroring_and_inital_patch_size``
and ``get_training_transforms``; the CT offset and noise in HU and the MRI bias field are ours):

- **Coarse axis and dummy 2D**: the axis with the largest target spacing is the out-of-plane axis. When
  the largest patch side is more than :data:`ANISOTROPY` (3) times the patch side along that axis, the
  spatial augmentation is 2D (``dummy_2d``): rotation about that axis only, no scaling and no
  simulated low resolution along it (nnU-Net's ``do_dummy_2d_data_aug``).
- **Rotation**: ±180° about the coarse axis in dummy 2D, else ±30° about every axis; probability 0.2.
- **Scaling**: one factor for all (scaled) axes, MONAI's sampling-grid convention (``> 1`` reads a larger
  region: structures look smaller), 0.7-1.4, probability 0.2.
- **Mirroring**: each axis with probability 0.5.
- **Intensity, every modality** (nnU-Net's ranges, on the normalised image): Gaussian noise sd up to
  0.316 (variance 0.1), p 0.1; Gaussian blur sigma 0.5-1 voxel per axis, p 0.2; multiplicative
  brightness 0.75-1.25, p 0.15; contrast 0.75-1.25 about the mean, range preserved, p 0.15; simulated
  low resolution at 0.5-1x, p 0.25; gamma 0.7-1.5 with the statistics retained, p 0.3, and the same on
  the inverted image, p 0.1.
- **CT** (calibrated Hounsfield units, one dataset-wide normalisation): an additive offset of up to
  ±:data:`CT_OFFSET_HU` (scanner calibration, contrast timing), p 0.2, and Gaussian noise of up to
  :data:`CT_NOISE_HU` sd (low-dose scans), p 0.2; both converted to normalised units with the channels'
  foreground std. nnU-Net's noise (0.316 sd) is only a few HU on a soft-tissue-normalised CT.
  The intensity transforms end with the normalisation's clip (``clip``: the ``[lower, upper]`` HU window
  in normalised units, always applied): a scanner's offset, noise or contrast change happens before the
  clip, so a shifted organ saturates at the window's edge at inference, and training must see it so.
  No gamma and no inverted gamma on CT: Hounsfield units are calibrated, and a power law (or an inverted
  image) models no CT acquisition change, while it moves tissues of close HU (the demo's lesion and soft
  tissue) onto each other. Measured on the demo's data at 60 epochs (``bench_robustness.py``): the
  largest drop of mean Dice under the battery went from -0.115 (nnU-Net's intensity set) to -0.078 with
  the clip and to -0.044 with the clip and without the gammas, at the same unshifted Dice.
- **MRI and other per-case z-scored channels**: a smooth multiplicative bias field (Legendre polynomial
  of degree 3 in the exponent, rescaled so the field stays within ``exp(±a)``, ``a`` uniform in [0, 0.3]:
  at most -26% to +35%, a coil's non-uniformity), p 0.3; no offset (the per-case z-score removes it).
  Unbounded Legendre coefficients of up to 0.3 (MONAI's ``RandBiasField`` style) give a median ratio of
  9.6x between the brightest and darkest voxel of a 48^3 patch, which no scanner produces; on the brain
  MRI benchmark (100 iterations) that field alone cost 0.05 grey-matter Dice.

The section is plain JSON (``plans.json``, ``config.json``) and flattens to ``KEY.FIELD`` names
(``rotation.prob``, ``noise.std_max``) for MLflow params (``aug.rotation.prob``) and for overrides
(:func:`apply_overrides`, ``medseg train --aug rotation.prob=0.3``). ``recipe`` ``"light"`` selects the
earlier fixed recipe (flips, in-plane quarter turns, a small z rotation and scaling, light intensity
scale, shift and noise), kept as the baseline the benchmarks compare with.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.transforms.intensity import ct_windows

__all__ = ["plan_augmentation", "augmentation_of", "apply_overrides", "parse_overrides", "flatten", "read_box", "RECIPES",
           "ANISOTROPY", "CT_OFFSET_HU", "CT_NOISE_HU", "MR_BIAS_AMPLITUDE", "MAX_READ_SCALE"]

ANISOTROPY = 3.0
CT_OFFSET_HU = 60.0
CT_NOISE_HU = 50.0
MR_BIAS_AMPLITUDE = 0.3  # the bias field stays within exp(+-a), a drawn up to this
MAX_READ_SCALE = 1.2  # the read box covers scaling up to this factor; beyond it the border is repeated
RECIPES = ("planned", "light")
_NNUNET_NOISE_SD = math.sqrt(0.1)


def _deg(x: float) -> float:
    return round(math.radians(x), 6)


def plan_augmentation(spacing: Sequence[float], patch_size: Sequence[int], channel_names: Mapping[Any, str],
                      normalization: Sequence[Any] = ()) -> dict[str, Any]:
    """The ``augmentation`` section for a plan (see the module docstring for the rules).

    Args:
        spacing: target spacing (x, y, z) in mm.
        patch_size: training patch (x, y, z) in voxels.
        channel_names: ``{channel: name}``; ``CT`` channels get the CT rules, any other the MRI rules.
        normalization: the plan's ``ChannelNorm`` per channel (their ``std`` converts HU to normalised units).
    """
    coarse = max(range(3), key=lambda a: (spacing[a], a))
    dummy_2d = max(patch_size) / patch_size[coarse] > ANISOTROPY
    rot = [[0.0, 0.0] for _ in range(3)]
    for a in range(3):
        if not dummy_2d:
            rot[a] = [_deg(-30), _deg(30)]
    if dummy_2d:
        rot[coarse] = [_deg(-180), _deg(180)]
    ct = all(str(n).strip().upper() == "CT" for n in channel_names.values())
    stds = [float(n.std) for n in normalization if getattr(n, "scheme", None) == "ct" and n.std]
    hu = sum(stds) / len(stds) if stds else None  # HU per normalised unit
    noise_max = max(_NNUNET_NOISE_SD, CT_NOISE_HU / hu) if ct and hu else _NNUNET_NOISE_SD
    offset = round(CT_OFFSET_HU / hu, 4) if ct and hu else 0.0
    windows = (ct_windows(normalization) or []) if ct and normalization else []
    return {
        "recipe": "planned", "modality": "CT" if ct else "MR", "coarse_axis": coarse, "dummy_2d": dummy_2d,
        "rotation": {"prob": 0.2, "range_rad": rot},
        "scale": {"prob": 0.2, "range": [0.7, 1.4], "axes": [a for a in range(3) if not (dummy_2d and a == coarse)]},
        "mirror": {"prob": 0.5, "axes": [0, 1, 2]},
        "bias_field": {"prob": 0.0 if ct else 0.3, "amplitude_max": MR_BIAS_AMPLITUDE, "degree": 3},
        "noise": {"prob": 0.2 if ct else 0.1, "std_max": round(noise_max, 4)},
        "blur": {"prob": 0.2, "sigma": [0.5, 1.0]},
        "brightness": {"prob": 0.15, "range": [0.75, 1.25]},
        "offset": {"prob": 0.2 if offset else 0.0, "range": [-offset, offset]},
        "contrast": {"prob": 0.15, "range": [0.75, 1.25]},
        "low_resolution": {"prob": 0.25, "zoom": [0.5, 1.0], "axes": [a for a in range(3)
                                                                       if not (dummy_2d and a == coarse)]},
        "gamma_inverted": {"prob": 0.0 if ct else 0.1, "range": [0.7, 1.5]},
        "gamma": {"prob": 0.0 if ct else 0.3, "range": [0.7, 1.5]},
        "clip": {"prob": 1.0 if windows else 0.0, "windows": windows},
    }


def augmentation_of(plan: Any) -> dict[str, Any]:
    """``plan.augmentation``, or the section planned from ``plan`` when it has none (a plan saved before it existed)."""
    if getattr(plan, "augmentation", None):
        aug = copy.deepcopy(dict(plan.augmentation))
        bias = aug.get("bias_field")
        if isinstance(bias, dict) and "coeff_max" in bias:  # a plan from before the field was bounded
            bias.pop("coeff_max")
            bias["amplitude_max"] = MR_BIAS_AMPLITUDE
        return aug
    return plan_augmentation(plan.spacing, plan.patch_size, plan.channel_names, plan.normalization)


def read_box(aug: Mapping[str, Any], patch_size: Sequence[int]) -> tuple[int, int, int]:
    """The box (x, y, z) that holds ``patch_size`` rotated by up to the planned angles and scaled by up to
    :data:`MAX_READ_SCALE` (nnU-Net's initial patch size), each side ``patch + 2k`` so the patch is its centre.

    The rotated extent is the largest over a 25-step grid of each rotation range (both orders of
    composing the axes), plus 2%.
    """
    if aug.get("recipe") == "light":
        return tuple(int(p) for p in patch_size)  # type: ignore[return-value]
    size = np.asarray(patch_size, float)
    ext = size.copy()
    if aug["rotation"]["prob"] > 0:
        rotated = _rotated_extent(size, aug["rotation"]["range_rad"])
        ext = np.where(rotated > size + 1e-6, rotated * 1.02, size)
    if aug["scale"]["prob"] > 0:
        factor = min(max(aug["scale"]["range"]), MAX_READ_SCALE)
        ext = np.asarray([e * factor if a in aug["scale"]["axes"] else e for a, e in enumerate(ext)])
    margins = np.maximum(0, np.ceil((ext - size) / 2 - 1e-6)).astype(int)
    return tuple(int(p) + 2 * int(m) for p, m in zip(patch_size, margins, strict=True))  # type: ignore[return-value]


def _rotated_extent(size: np.ndarray, ranges: Sequence[Sequence[float]]) -> np.ndarray:
    grids = [np.linspace(lo, hi, 25) if hi > lo else np.asarray([lo], float) for lo, hi in ranges]
    angles = np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, 3)
    c, s = np.cos(angles), np.sin(angles)
    one, zero = np.ones(len(angles)), np.zeros(len(angles))
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, c[:, 0], -s[:, 0]], -1),
                   np.stack([zero, s[:, 0], c[:, 0]], -1)], -2)
    ry = np.stack([np.stack([c[:, 1], zero, s[:, 1]], -1), np.stack([zero, one, zero], -1),
                   np.stack([-s[:, 1], zero, c[:, 1]], -1)], -2)
    rz = np.stack([np.stack([c[:, 2], -s[:, 2], zero], -1), np.stack([s[:, 2], c[:, 2], zero], -1),
                   np.stack([zero, zero, one], -1)], -2)
    ext = [np.abs(r) @ size for r in (rz @ ry @ rx, rx @ ry @ rz)]
    return np.max(np.concatenate(ext), axis=0)


def flatten(aug: Mapping[str, Any]) -> dict[str, Any]:
    """``{"rotation.prob": 0.2, ..., "recipe": "planned"}``: one entry per overridable value."""
    out: dict[str, Any] = {}
    for key, value in aug.items():
        if isinstance(value, Mapping):
            out.update({f"{key}.{field}": v for field, v in value.items()})
        else:
            out[key] = value
    return out


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["noise.prob=0.3", "blur.sigma=[0.5,1.5]"]`` -> ``{"noise.prob": 0.3, "blur.sigma": [0.5, 1.5]}`` (JSON values;
    a bare word is a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--aug {item!r}: expected KEY=VALUE, e.g. noise.prob=0.3")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw.strip()
    return out


def apply_overrides(aug: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``aug`` with ``overrides`` (flattened names, see :func:`flatten`) applied and checked.

    Raises:
        InputError: an unknown name, a probability outside [0, 1], a range whose bounds are reversed, or a
            value of the wrong kind; the message names the key and the value.
    """
    out = copy.deepcopy(dict(aug))
    known = flatten(out)
    for key, value in overrides.items():
        if key not in known:
            raise InputError(f"--aug {key}: unknown augmentation setting; known: {', '.join(sorted(known))}")
        _check(key, value, known[key])
        section, _, field = key.partition(".")
        if field:
            out[section][field] = value
        else:
            out[section] = value
    return out


def _check(key: str, value: Any, planned: Any) -> None:
    if key == "recipe":
        if value not in RECIPES:
            raise InputError(f"--aug recipe={value!r}: must be one of {', '.join(RECIPES)}")
        return
    if isinstance(planned, bool) or isinstance(planned, str):
        if type(value) is not type(planned):
            raise InputError(f"--aug {key}={value!r}: expected a {type(planned).__name__}")
        return
    if isinstance(planned, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"--aug {key}={value!r}: expected a number")
        if key.endswith(".prob") and not 0.0 <= value <= 1.0:
            raise InputError(f"--aug {key}={value}: a probability must be in [0, 1]")
        if value < 0:
            raise InputError(f"--aug {key}={value}: must be >= 0")
        return
    if key.endswith(".axes"):
        if not isinstance(value, list) or any(a not in (0, 1, 2) for a in value):
            raise InputError(f"--aug {key}={value!r}: expected a list of axes among 0, 1, 2")
        return
    if not isinstance(value, list) or len(value) != len(planned):
        raise InputError(f"--aug {key}={value!r}: expected a list of {len(planned)} like {planned}")
    pairs = value if key.endswith(("range_rad", "windows")) else [value]
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair)
                and pair[0] <= pair[1]):
            raise InputError(f"--aug {key}={value!r}: expected [low, high] with low <= high")
