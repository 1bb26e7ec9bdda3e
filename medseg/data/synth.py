"""Synthetic CT-like volumes with an organ and small lesions, in Medical Segmentation Decathlon layout.

Each case is an abdomen-like phantom in Hounsfield units: air outside an elliptic body with a fat
layer, soft tissue, a spine (bone), an organ (label 1, a smoothly deformed and rotated ellipsoid)
and one to three small hypodense lesions inside the organ (label 2, far below 2% of the volume:
the class-imbalance case). A smooth additive bias field and Gaussian noise are added. Voxels are
anisotropic (0.8 x 0.8 x 2.5 mm by default) and every third case is stored in LPS orientation,
so pipelines must honour the affine. The same seed gives the same bytes (gzip with mtime 0).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.errors import InputError
from medseg.utils.files import atomic_path, atomic_write_text

__all__ = ["SynthConfig", "synthesise_case", "synthesise_dataset", "LABELS"]

LABELS: dict[str, str] = {"0": "background", "1": "organ", "2": "lesion"}

# Hounsfield-like tissue values
_AIR, _FAT, _SOFT, _BONE, _ORGAN, _LESION = -1000.0, -100.0, 40.0, 700.0, 110.0, 45.0


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of a synthetic dataset.

    Attributes:
        train_cases: number of labelled training cases (imagesTr/labelsTr).
        test_cases: number of held-out cases (imagesTs/labelsTs).
        size: in-plane voxels per side; the slice count is ``size // 2``.
        spacing: voxel size in mm (x, y, z).
        lesion_radius_mm: (min, max) lesion radius in mm.
        max_lesions: at most this many lesions per case (at least one).
        noise_hu: standard deviation of the Gaussian noise in HU.
        lps_every: store every k-th case in LPS orientation (0 disables).
        seed: seed of the whole dataset; case k uses an independent stream derived from it.
    """

    train_cases: int = 24
    test_cases: int = 6
    size: int = 96
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5)
    lesion_radius_mm: tuple[float, float] = (4.0, 8.0)
    max_lesions: int = 3
    noise_hu: float = 20.0
    lps_every: int = 3
    seed: int = 0
    labels: dict[str, str] = field(default_factory=lambda: dict(LABELS))

    def validate(self) -> None:
        if self.train_cases < 1:
            raise InputError(f"--train-cases must be >= 1, got {self.train_cases}")
        if self.test_cases < 0:
            raise InputError(f"--test-cases must be >= 0, got {self.test_cases}")
        if not 24 <= self.size <= 512:
            raise InputError(f"--size must be between 24 and 512 voxels, got {self.size}")
        if any(s <= 0 for s in self.spacing) or len(self.spacing) != 3:
            raise InputError(f"--spacing must be three positive numbers in mm, got {self.spacing}")
        lo, hi = self.lesion_radius_mm
        if not 0 < lo <= hi:
            raise InputError(f"--lesion-radius must satisfy 0 < min <= max, got {self.lesion_radius_mm}")
        if self.max_lesions < 1:
            raise InputError(f"--max-lesions must be >= 1, got {self.max_lesions}")


def synthesise_case(cfg: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One phantom in RAS voxel order: (image int16 HU, label uint8), both of shape (X, Y, Z)."""
    nx = ny = cfg.size
    nz = max(cfg.size // 2, 12)
    sx, sy, sz = cfg.spacing
    # physical coordinates in mm, centred on the volume
    x = (np.arange(nx) - (nx - 1) / 2) * sx
    y = (np.arange(ny) - (ny - 1) / 2) * sy
    z = (np.arange(nz) - (nz - 1) / 2) * sz
    gx, gy, gz = np.meshgrid(x, y, z, indexing="ij")
    half_x, half_y, half_z = nx * sx / 2, ny * sy / 2, nz * sz / 2

    image = np.full((nx, ny, nz), _AIR, dtype=np.float32)
    # body: elliptic cylinder along z with a fat layer
    bx, by = half_x * rng.uniform(0.80, 0.92), half_y * rng.uniform(0.62, 0.75)
    body_r = (gx / bx) ** 2 + (gy / by) ** 2
    image[body_r <= 1.0] = _FAT
    inner = (gx / (bx - 4.0)) ** 2 + (gy / (by - 4.0)) ** 2 <= 1.0
    image[inner] = _SOFT
    # spine: bone cylinder, posterior (negative y in RAS is posterior)
    spine = (gx / 6.0) ** 2 + ((gy + by * 0.65) / 6.0) ** 2 <= 1.0
    image[spine & inner] = _BONE

    # organ: deformed rotated ellipsoid in the right-anterior part of the body
    centre = np.array([rng.uniform(-0.35, -0.15) * bx, rng.uniform(-0.05, 0.2) * by, rng.uniform(-0.1, 0.1) * half_z])
    radii = np.array([rng.uniform(0.32, 0.40) * bx, rng.uniform(0.40, 0.50) * by, rng.uniform(0.50, 0.65) * half_z])
    theta = rng.uniform(-0.4, 0.4)
    c, s = np.cos(theta), np.sin(theta)
    dx, dy, dz = gx - centre[0], gy - centre[1], gz - centre[2]
    rx, ry = c * dx - s * dy, s * dx + c * dy
    dist = np.sqrt((rx / radii[0]) ** 2 + (ry / radii[1]) ** 2 + (dz / radii[2]) ** 2)
    freq = rng.uniform(0.04, 0.09, size=3)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    wobble = 0.12 * np.sin(freq[0] * rx + phase[0]) * np.cos(freq[1] * ry + phase[1]) + 0.08 * np.sin(freq[2] * dz + phase[2])
    organ = (dist * (1.0 + wobble) <= 1.0) & inner & ~spine
    image[organ] = _ORGAN
    label = np.zeros((nx, ny, nz), dtype=np.uint8)
    label[organ] = 1

    # lesions: small spheres whose centres lie inside the organ
    organ_idx = np.argwhere(organ)
    n_lesions = int(rng.integers(1, cfg.max_lesions + 1))
    for _ in range(n_lesions):
        if len(organ_idx) == 0:
            break
        cx, cy, cz = organ_idx[rng.integers(len(organ_idx))]
        r = rng.uniform(*cfg.lesion_radius_mm)
        sphere = (gx - x[cx]) ** 2 + (gy - y[cy]) ** 2 + (gz - z[cz]) ** 2 <= r**2
        lesion = sphere & organ
        image[lesion] = _LESION + rng.normal(0, 5)
        label[lesion] = 2

    # smooth additive bias field (low-order polynomial) and noise
    coeff = rng.normal(0, 15, size=4)
    bias = coeff[0] + coeff[1] * gx / half_x + coeff[2] * gy / half_y + coeff[3] * (gx * gy) / (half_x * half_y)
    body = body_r <= 1.0
    image[body] += bias[body]
    image += rng.normal(0, cfg.noise_hu, size=image.shape).astype(np.float32)
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16), label


def _ras_affine(shape: tuple[int, ...], spacing: tuple[float, float, float]) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, spacing, strict=True)]
    return affine


def _to_lps(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same physical image stored with the first two voxel axes reversed (LPS orientation)."""
    nx, ny = data.shape[:2]
    flip = np.array([[-1, 0, 0, nx - 1], [0, -1, 0, ny - 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    return np.ascontiguousarray(data[::-1, ::-1, :]), affine @ flip


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    raw = img.to_bytes()
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(raw, compresslevel=6, mtime=0))


def synthesise_dataset(out_dir: str | Path, cfg: SynthConfig) -> Path:
    """Write ``cfg.train_cases + cfg.test_cases`` cases and ``dataset.json`` under ``out_dir``.

    Returns the path of ``dataset.json``. Layout: imagesTr/, labelsTr/, imagesTs/, labelsTs/
    with files ``case_000.nii.gz``; ``dataset.json`` follows the MSD schema, its ``test`` list
    holding ``{"image", "label"}`` pairs because held-out labels are written too.
    """
    cfg.validate()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    streams = np.random.SeedSequence(cfg.seed).spawn(cfg.train_cases + cfg.test_cases)
    training, test = [], []
    for k, stream in enumerate(streams):
        rng = np.random.default_rng(stream)
        image, label = synthesise_case(cfg, rng)
        affine = _ras_affine(image.shape, cfg.spacing)
        if cfg.lps_every and k % cfg.lps_every == cfg.lps_every - 1:
            image, _ = _to_lps(image, affine)
            label, affine = _to_lps(label, affine)
        is_train = k < cfg.train_cases
        name = f"case_{k:03d}.nii.gz"
        img_rel = f"./{'imagesTr' if is_train else 'imagesTs'}/{name}"
        lab_rel = f"./{'labelsTr' if is_train else 'labelsTs'}/{name}"
        _write_nifti(out / img_rel, image, affine)
        _write_nifti(out / lab_rel, label, affine)
        (training if is_train else test).append({"image": img_rel, "label": lab_rel})
    meta = {
        "name": "SyntheticAbdomenCT",
        "description": "Synthetic CT-like abdomen phantoms: organ (1) and small lesions (2)",
        "reference": "medseg synth",
        "licence": "CC0-1.0",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": cfg.labels,
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
        "spacing_mm": list(cfg.spacing),
        "seed": cfg.seed,
    }
    dataset_json = out / "dataset.json"
    atomic_write_text(dataset_json, json.dumps(meta, indent=2) + "\n")
    return dataset_json
