"""Brain T1 MRI cases with grey/white-matter labels, built from the MNI152 2009 template shipped in nilearn.

nilearn bundles the ICBM152 2009 (nonlinear symmetric, 1 mm) skull-stripped T1 template and its
grey- and white-matter probability maps inside the package (``nilearn/datasets/data/``);
:func:`load_templates` reads them with network access blocked, so nothing is downloaded.

Labels: ``1`` grey matter, ``2`` white matter: the larger of the two probabilities where it is at
least 0.5, inside the brain mask; everything else (CSF, background) is ``0``.

Each case is the template seen through a different "subject and scanner":

- random affine about the brain centre: rotation up to ``max_rotation_deg`` about each axis,
  per-axis scaling ``1 ± max_scale``, translation up to 5 mm;
- smooth elastic deformation: Gaussian displacements on a 16 mm control grid, smoothed and
  interpolated to the voxel grid (about ``elastic_mm`` mm RMS per component);
- resampling to the case's voxel spacing, drawn in [1.0, 1.5] mm: every second case isotropic,
  the others anisotropic (in-plane 1.0-1.2 mm, slices 1.3-1.5 mm along z); the T1 is blurred
  by a Gaussian matching the voxel size first (partial volume), labels are sampled from the
  unblurred probability maps (linear interpolation, then the rule above);
- a multiplicative bias field (``exp`` of a smooth random field, about ±20 %), a random gamma
  (0.8-1.25) and gain, Rician noise (magnitude of a complex signal with Gaussian noise, sigma
  2-5 % of the mean brain intensity), then skull-stripping: the background is exactly 0;
- every third case is stored in LPS orientation (x and y axes flipped in the file), the others RAS.

Layout: Medical Segmentation Decathlon (``imagesTr/``, ``labelsTr/``, ``imagesTs/``, ``labelsTs/``,
``dataset.json`` with ``"modality": {"0": "T1"}``). Sizes (default 12 + 4 cases, seed 0): the
template brain spans 145 x 181 x 155 mm; after warping and a 9 mm margin a case is 108-206 voxels
per axis (1.7-5.4 M voxels, 1-2.6 MB per compressed int16 image; 27 MB in all), built in about a
minute on 2 CPU cores.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = ["BrainConfig", "load_templates", "synthesise_case", "build_dataset", "LABELS"]

LABELS = {"0": "background", "1": "grey matter", "2": "white matter"}


@dataclass(frozen=True)
class BrainConfig:
    """What :func:`build_dataset` draws from; recorded in ``dataset.json`` (``synth_options``)."""

    train_cases: int = 12
    test_cases: int = 4
    seed: int = 0
    max_rotation_deg: float = 10.0
    max_scale: float = 0.10
    elastic_mm: float = 2.0
    spacing_range: tuple[float, float] = (1.0, 1.5)


@contextlib.contextmanager
def _no_network() -> Iterator[None]:
    """Any socket connection inside the block raises, so a download attempt cannot pass unnoticed."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("network access attempted while loading the bundled MNI152 templates")

    saved = socket.socket.connect, socket.create_connection
    socket.socket.connect, socket.create_connection = refuse, refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.socket.connect, socket.create_connection = saved  # type: ignore[assignment]


def load_templates() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(t1, gm, wm, affine)``: the 1 mm MNI152 2009 arrays (float32 in [0, 1], RAS) and their affine."""
    with _no_network():
        from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template

        imgs = [load(resolution=1) for load in (load_mni152_template, load_mni152_gm_template,
                                                load_mni152_wm_template)]
    arrays = [np.asarray(im.get_fdata(dtype=np.float32)) for im in imgs]
    return arrays[0], arrays[1], arrays[2], np.asarray(imgs[0].affine, float)


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: tuple[int, ...], std: float) -> np.ndarray:
    """A smooth random field on ``shape``: Gaussian noise on a ``coarse`` grid, smoothed, cubic-interpolated."""
    noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, coarse), sigma=0.7, mode="nearest")
    noise *= std / max(float(noise.std()), 1e-8)
    return ndimage.zoom(noise, [s / c for s, c in zip(shape, coarse, strict=True)], order=1, mode="nearest",
                        grid_mode=True).astype(np.float32)


def _case_spacing(rng: np.random.Generator, index: int, lo: float, hi: float) -> np.ndarray:
    if index % 2 == 0:
        return np.full(3, round(float(rng.uniform(lo, hi)), 3))
    inplane = round(float(rng.uniform(lo, lo + 0.4 * (hi - lo))), 3)
    return np.array([inplane, inplane, round(float(rng.uniform(lo + 0.6 * (hi - lo), hi)), 3)])


def synthesise_case(templates: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], cfg: BrainConfig,
                    index: int, rng: np.random.Generator) -> tuple[nib.Nifti1Image, nib.Nifti1Image, dict[str, Any]]:
    """One case ``(image, label, info)``; ``info`` holds its spacing, shape and orientation."""
    t1, gm, wm, src_affine = templates
    brain = t1 > 0
    spacing = _case_spacing(rng, index, *cfg.spacing_range)
    # forward model (template world -> subject world): y = c + M (x - c) + t
    idx = np.argwhere(brain)
    to_world = lambda v: v @ src_affine[:3, :3].T + src_affine[:3, 3]  # noqa: E731
    centre = to_world((idx.min(0) + idx.max(0)) / 2.0)
    m = _rotation(np.deg2rad(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg, 3))) @ np.diag(
        rng.uniform(1 - cfg.max_scale, 1 + cfg.max_scale, 3))
    shift = rng.uniform(-5.0, 5.0, 3)
    moved = (to_world(idx[::7].astype(float)) - centre) @ m.T + centre + shift  # brain voxels, subject world
    margin = 3.0 + 3 * cfg.elastic_mm
    origin = moved.min(0) - margin
    shape = tuple(int(n) for n in np.ceil((moved.max(0) + margin - origin) / spacing))
    # output voxel centres in subject world, mapped back to template voxel indices
    grids = np.meshgrid(*[origin[a] + spacing[a] * np.arange(shape[a], dtype=np.float32) for a in range(3)],
                        indexing="ij", sparse=True)
    coarse = tuple(max(2, int(round(s * sp / 16.0))) for s, sp in zip(shape, spacing, strict=True))
    y = [grids[a] + _smooth_field(rng, shape, coarse, cfg.elastic_mm) for a in range(3)]
    # template voxel = A^-1 (c + M^-1 (y - c - t) - a), with A, a the template affine's matrix and offset
    a_inv = np.linalg.inv(src_affine[:3, :3])
    k = a_inv @ np.linalg.inv(m)
    b = a_inv @ (centre - src_affine[:3, 3])
    rel = [y[j] - np.float32(centre[j] + shift[j]) for j in range(3)]
    coords = np.stack([sum(np.float32(k[i, j]) * rel[j] for j in range(3)) + np.float32(b[i]) for i in range(3)])
    del rel, y
    # partial volume: blur the 1 mm T1 to the case's voxel size (FWHM = voxel size)
    sigma = np.sqrt(np.maximum(spacing**2 - 1.0, 0.0)) / 2.355
    t1_pv = ndimage.gaussian_filter(t1, sigma=sigma) if sigma.any() else t1
    sample = lambda vol: ndimage.map_coordinates(vol, coords, order=1, mode="constant", cval=0.0)  # noqa: E731
    image = sample(t1_pv)
    mask = sample(brain.astype(np.float32)) >= 0.5
    p_gm, p_wm = sample(gm), sample(wm)
    label = np.where(np.maximum(p_gm, p_wm) >= 0.5, np.where(p_wm > p_gm, 2, 1), 0).astype(np.uint8)
    label[~mask] = 0
    # scanner: gamma, bias field, gain, Rician noise, skull-stripping
    image = np.clip(image, 0.0, None) ** rng.uniform(0.8, 1.25)
    image *= np.exp(_smooth_field(rng, shape, (4, 4, 4), 0.12))
    image *= rng.uniform(400.0, 1200.0)
    sd = rng.uniform(0.02, 0.05) * float(image[mask].mean())
    image = np.sqrt((image + rng.normal(0.0, sd, shape)) ** 2 + rng.normal(0.0, sd, shape) ** 2)
    image[~mask] = 0.0
    image = np.rint(image).astype(np.int16)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    lps = index % 3 == 2
    if lps:  # same world positions, stored with x and y reversed
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[:2, 3] = [shape[0] - 1, shape[1] - 1]
        affine = affine @ flip
        image, label = image[::-1, ::-1].copy(), label[::-1, ::-1].copy()
    info = {"spacing": [float(s) for s in spacing], "shape": list(shape), "orientation": "LPS" if lps else "RAS",
            "grey_matter_voxels": int((label == 1).sum()), "white_matter_voxels": int((label == 2).sum())}
    return _nifti(image, affine), _nifti(label, affine), info


def _nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def build_dataset(root: str | Path, cfg: BrainConfig = BrainConfig()) -> Path:
    """Write the dataset under ``root`` (MSD layout) and return its ``dataset.json``.

    An existing ``dataset.json`` written with the same ``cfg`` is reused as is.
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("synth_options") == options and all(
                (root / e[k]).is_file() for e in meta["training"] + meta["test"] for k in ("image", "label")):
            return meta_path
    templates = load_templates()
    streams = np.random.SeedSequence(cfg.seed).spawn(cfg.train_cases + cfg.test_cases)
    training, test, cases = [], [], {}
    for i, stream in enumerate(streams):
        train = i < cfg.train_cases
        cid = f"brain_{i:03d}"
        image, label, info = synthesise_case(templates, cfg, i, np.random.default_rng(stream))
        img_dir, lab_dir = ("imagesTr", "labelsTr") if train else ("imagesTs", "labelsTs")
        for sub, obj in ((img_dir, image), (lab_dir, label)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            nib.save(obj, root / sub / f"{cid}.nii.gz")
        entry = {"image": f"./{img_dir}/{cid}.nii.gz", "label": f"./{lab_dir}/{cid}.nii.gz"}
        (training if train else test).append(entry)
        cases[cid] = info
    meta = {"name": "BrainMNI152T1", "description": "T1 brain MRI cases warped from the MNI152 2009 template "
            "(nilearn): grey matter (1), white matter (2)", "reference": "ICBM152 2009 nonlinear symmetric, via nilearn",
            "tensorImageSize": "3D", "modality": {"0": "T1"}, "labels": LABELS, "numTraining": len(training),
            "numTest": len(test), "training": training, "test": test, "synth_options": options, "cases": cases}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta_path
