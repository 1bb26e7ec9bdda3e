"""Synthetic CT- or MRI-like volumes with an organ and small lesions, in MSD or nnU-Net v2 layout.

Each case is an abdomen-like phantom: air outside an elliptic body with a fat layer, soft tissue, a
spine (bone), an organ (label 1, a smoothly deformed and rotated ellipsoid) and small lesions
inside the organ (label 2, far below 2% of the volume: the class-imbalance case; their count and
radius are options). A smooth bias field and noise are added. Voxels are anisotropic
(0.8 x 0.8 x 2.5 mm by default) and every third case is stored in LPS orientation, so pipelines
must honour the affine. The same seed gives the same bytes (gzip with mtime 0).

Options beyond the default dataset (which they leave unchanged, byte for byte):

- ``modality="MR"``: intensities in arbitrary units, Rician noise and a multiplicative bias inside
  the body, exactly zero outside it.
- ``channels=N``: N co-registered contrasts of the same anatomy (CT: venous, arterial, native
  phases; MR: T1, T2, FLAIR, T1ce). MSD layout stores them in one 4D file, channels last; nnU-Net
  layout in ``CASE_0000 .. CASE_{N-1}`` files. ``decoy_channel``: every channel but the last is
  pure Gaussian noise, so only the last one shows the anatomy (a test that channels are read).
- ``regions``: BraTS-like labels: 1 = organ rim (the outer 30% of the organ's depth and at least
  one voxel along every axis, with its own intensity), 2 = organ core, 3 = lesion, with nnU-Net regions whole = {1, 2, 3},
  core = {2, 3}, lesion = {3} and ``regions_class_order`` [1, 2, 3].
- ``vessels``: a thin contrast-filled tubular tree (a trunk and two branches, 3-4 voxels across)
  beside the organ, with its own label (the next label value).

The options draw their random numbers from a second stream per case, so turning one on leaves the
anatomy, lesions and noise of the default dataset unchanged.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from medseg.errors import InputError
from medseg.utils.files import atomic_path, atomic_write_text

__all__ = ["SynthConfig", "synthesise_case", "synthesise_dataset", "channel_names", "label_map", "LABELS",
           "REGIONS", "LAYOUTS", "MODALITIES"]

LABELS: dict[str, str] = {"0": "background", "1": "organ", "2": "lesion"}
REGIONS: dict[str, list[int]] = {"whole": [1, 2, 3], "core": [2, 3], "lesion": [3]}
LAYOUTS = ("msd", "nnunet")
MODALITIES = ("CT", "MR")
MAX_CHANNELS = 8
RIM_DEPTH = 0.3  # regions: the rim is the organ's outer 30% (of its largest inner distance, in mm)

# tissue codes of the phantom
_AIR_T, _FAT_T, _SOFT_T, _BONE_T, _ORGAN_T, _LESION_T, _RIM_T, _VESSEL_T = range(8)
# intensity of each tissue code, one row per contrast: (name, air, fat, soft, bone, organ, lesion, rim, vessel)
_CONTRASTS: dict[str, tuple[tuple[Any, ...], ...]] = {
    "CT": (("CT", -1000.0, -100.0, 40.0, 700.0, 110.0, 45.0, 80.0, 190.0),   # portal-venous phase (HU)
           ("CT", -1000.0, -100.0, 45.0, 700.0, 80.0, 120.0, 70.0, 320.0),   # arterial
           ("CT", -1000.0, -100.0, 40.0, 650.0, 55.0, 30.0, 50.0, 45.0)),    # native
    "MR": (("T1", 0.0, 850.0, 380.0, 160.0, 520.0, 260.0, 420.0, 120.0),     # arbitrary units
           ("T2", 0.0, 620.0, 300.0, 90.0, 340.0, 720.0, 560.0, 60.0),
           ("FLAIR", 0.0, 520.0, 290.0, 70.0, 330.0, 640.0, 610.0, 40.0),
           ("T1ce", 0.0, 850.0, 390.0, 160.0, 560.0, 800.0, 430.0, 950.0)),
}
_INT16 = (-32768, 32767)


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of a synthetic dataset.

    Attributes:
        train_cases: number of labelled training cases (imagesTr/labelsTr).
        test_cases: number of held-out cases (imagesTs/labelsTs).
        size: in-plane voxels per side; the slice count is ``size // 2`` (at least 12).
        spacing: voxel size in mm (x, y, z).
        lesion_radius_mm: (min, max) lesion radius in mm.
        lesions: (min, max) lesions per case, drawn uniformly.
        noise_hu: standard deviation of the Gaussian noise (HU for CT, units for MR).
        lps_every: store every k-th case in LPS orientation (0 disables).
        seed: seed of the whole dataset; case k uses independent streams derived from it.
        channels: input channels (contrasts) per case.
        decoy_channel: channels ``0 .. channels-2`` are pure noise (needs ``channels >= 2``).
        layout: ``msd`` (dataset.json lists; 4D files) or ``nnunet`` (v2 raw: one file per channel).
        regions: BraTS-like region labels (rim 1, core 2, lesion 3) instead of organ/lesion.
        vessels: add a tubular vessel tree beside the organ, labelled with the next value.
        modality: ``CT`` (Hounsfield units) or ``MR`` (arbitrary units, zero outside the body).
    """

    train_cases: int = 24
    test_cases: int = 6
    size: int = 96
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5)
    lesion_radius_mm: tuple[float, float] = (4.0, 8.0)
    lesions: tuple[int, int] = (1, 3)
    noise_hu: float = 20.0
    lps_every: int = 3
    seed: int = 0
    channels: int = 1
    decoy_channel: bool = False
    layout: str = "msd"
    regions: bool = False
    vessels: bool = False
    modality: str = "CT"

    def validate(self) -> None:
        if self.train_cases < 1:
            raise InputError(f"--train-cases must be >= 1, got {self.train_cases}")
        if self.test_cases < 0:
            raise InputError(f"--test-cases must be >= 0, got {self.test_cases}")
        if not 24 <= self.size <= 512:
            raise InputError(f"--size must be between 24 and 512 voxels, got {self.size}")
        if len(self.spacing) != 3 or any(s <= 0 for s in self.spacing):
            raise InputError(f"--spacing must be three positive numbers in mm, got {self.spacing}")
        lo, hi = self.lesion_radius_mm
        if not 0 < lo <= hi:
            raise InputError(f"--lesion-radius must satisfy 0 < min <= max, got {self.lesion_radius_mm}")
        n_lo, n_hi = self.lesions
        if not 0 <= n_lo <= n_hi <= 50:
            raise InputError(f"--lesions must satisfy 0 <= min <= max <= 50, got {self.lesions}")
        if not self.noise_hu >= 0:
            raise InputError(f"--noise must be >= 0, got {self.noise_hu}")
        if not 1 <= self.channels <= MAX_CHANNELS:
            raise InputError(f"--channels must be between 1 and {MAX_CHANNELS}, got {self.channels}")
        if self.decoy_channel and self.channels < 2:
            raise InputError(f"--decoy-channel needs --channels >= 2, got {self.channels}")
        if self.layout not in LAYOUTS:
            raise InputError(f"--layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.modality not in MODALITIES:
            raise InputError(f"--modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}")


def channel_names(cfg: SynthConfig) -> dict[str, str]:
    """Channel index -> name, as written to ``dataset.json`` (decoys are named ``noise``)."""
    table = _CONTRASTS[cfg.modality]
    first = cfg.channels - 1 if cfg.decoy_channel else 0
    return {str(c): ("noise" if c < first else table[(c - first) % len(table)][0]) for c in range(cfg.channels)}


def label_map(cfg: SynthConfig) -> dict[str, Any]:
    """The ``labels`` of ``dataset.json``: MSD ``{"1": "organ"}`` or nnU-Net v2 ``{"organ": 1}`` / regions."""
    if cfg.regions:
        labels: dict[str, Any] = {"background": 0, **{k: list(v) for k, v in REGIONS.items()}}
        if cfg.vessels:
            labels["vessel"] = 4
        return labels
    plain = dict(LABELS)
    if cfg.vessels:
        plain["3"] = "vessel"
    if cfg.layout == "nnunet":
        return {name: int(value) for value, name in plain.items()}
    return plain


def synthesise_case(cfg: SynthConfig, stream: np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
    """One phantom in RAS voxel order: (image int16 ``(C, X, Y, Z)``, label uint8 ``(X, Y, Z)``)."""
    rng = np.random.default_rng(stream)  # the default dataset's stream, drawn in its historical order
    extra = np.random.default_rng(stream.spawn(1)[0])  # everything the options add
    nx = ny = cfg.size
    nz = max(cfg.size // 2, 12)
    sx, sy, sz = cfg.spacing
    # physical coordinates in mm, centred on the volume
    x = (np.arange(nx) - (nx - 1) / 2) * sx
    y = (np.arange(ny) - (ny - 1) / 2) * sy
    z = (np.arange(nz) - (nz - 1) / 2) * sz
    gx, gy, gz = np.meshgrid(x, y, z, indexing="ij")
    half_x, half_y, half_z = nx * sx / 2, ny * sy / 2, nz * sz / 2

    tissue = np.full((nx, ny, nz), _AIR_T, dtype=np.uint8)
    # body: elliptic cylinder along z with a fat layer
    bx, by = half_x * rng.uniform(0.80, 0.92), half_y * rng.uniform(0.62, 0.75)
    body = (gx / bx) ** 2 + (gy / by) ** 2 <= 1.0
    tissue[body] = _FAT_T
    inner = (gx / (bx - 4.0)) ** 2 + (gy / (by - 4.0)) ** 2 <= 1.0
    tissue[inner] = _SOFT_T
    # spine: bone cylinder, posterior (negative y in RAS is posterior)
    spine = (gx / 6.0) ** 2 + ((gy + by * 0.65) / 6.0) ** 2 <= 1.0
    tissue[spine & inner] = _BONE_T

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
    tissue[organ] = _ORGAN_T
    label = np.zeros((nx, ny, nz), dtype=np.uint8)
    label[organ] = 1
    if cfg.regions and organ.any():
        depth = ndimage.distance_transform_edt(organ, sampling=cfg.spacing)
        rim = organ & (depth <= max(RIM_DEPTH * depth.max(), max(cfg.spacing)))  # >= 1 voxel on every axis
        tissue[rim] = _RIM_T
        label[organ] = 2
        label[rim] = 1

    # lesions: small spheres whose centres lie inside the organ; each with its own intensity offset
    shift = np.zeros((nx, ny, nz))
    organ_idx = np.argwhere(organ)
    n_lesions = int(rng.integers(cfg.lesions[0], cfg.lesions[1] + 1))
    for _ in range(n_lesions):
        if len(organ_idx) == 0:
            break
        cx, cy, cz = organ_idx[rng.integers(len(organ_idx))]
        r = rng.uniform(*cfg.lesion_radius_mm)
        lesion = ((gx - x[cx]) ** 2 + (gy - y[cy]) ** 2 + (gz - z[cz]) ** 2 <= r**2) & organ
        tissue[lesion] = _LESION_T
        shift[lesion] = rng.normal(0, 5)
        label[lesion] = 3 if cfg.regions else 2

    if cfg.vessels:
        vessel = _vessel_tree(extra, (gx, gy, gz), centre, radii, half_z, min(sx, sy)) & inner & ~spine & ~organ
        tissue[vessel] = _VESSEL_T
        label[vessel] = 4 if cfg.regions else 3

    # smooth bias field (low-order polynomial) and noise
    coeff = rng.normal(0, 15, size=4)
    bias = coeff[0] + coeff[1] * gx / half_x + coeff[2] * gy / half_y + coeff[3] * (gx * gy) / (half_x * half_y)
    noise = rng.normal(0, cfg.noise_hu, size=tissue.shape)
    table = _CONTRASTS[cfg.modality]
    first = cfg.channels - 1 if cfg.decoy_channel else 0
    channels = []
    for k in range(cfg.channels - first):
        ch_noise = noise if k == 0 else extra.normal(0, cfg.noise_hu, size=tissue.shape)
        channels.append(_render(cfg.modality, table[k % len(table)][1:], tissue, shift, body, bias, ch_noise, extra))
    decoys = [_decoy(channels[0], extra) for _ in range(first)]
    return np.stack(decoys + channels), label


def _vessel_tree(rng: np.random.Generator, grid: tuple[np.ndarray, ...], centre: np.ndarray, radii: np.ndarray,
                 half_z: float, fine_mm: float) -> np.ndarray:
    """A trunk along z on the organ's medial side and two branches leaving it medially; tubes ~2 voxels in radius."""
    trunk_x = centre[0] + radii[0] * 1.1 + 2.0 * fine_mm
    trunk_y = centre[1] + rng.uniform(-0.3, 0.3) * radii[1]
    a = np.array([trunk_x, trunk_y, -0.8 * half_z])
    b = np.array([trunk_x + rng.uniform(-2, 2) * fine_mm, trunk_y + rng.uniform(-2, 2) * fine_mm, 0.8 * half_z])
    mask = _tube(grid, a, b, 2.0 * fine_mm)
    for _ in range(2):
        t = rng.uniform(0.25, 0.75)
        start = a + t * (b - a)
        angle = rng.uniform(-1.0, 1.0)  # medial (+x) +- ~60 degrees
        length = rng.uniform(0.6, 1.0) * radii[0]
        end = start + length * np.array([np.cos(angle), np.sin(angle), rng.uniform(-0.3, 0.3)])
        mask |= _tube(grid, start, end, 1.4 * fine_mm)
    return mask


def _tube(grid: tuple[np.ndarray, ...], a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
    """Voxels within ``radius`` mm of the segment ``a``-``b`` (coordinates in mm)."""
    d = b - a
    rel = [g - ai for g, ai in zip(grid, a, strict=True)]
    t = np.clip(sum(r * di for r, di in zip(rel, d, strict=True)) / float(d @ d), 0.0, 1.0)
    return sum((r - t * di) ** 2 for r, di in zip(rel, d, strict=True)) <= radius**2


def _render(modality: str, values: tuple[float, ...], tissue: np.ndarray, shift: np.ndarray, body: np.ndarray,
            bias: np.ndarray, noise: np.ndarray, extra: np.random.Generator) -> np.ndarray:
    """One contrast of the phantom: int16 ``(X, Y, Z)``."""
    base = np.asarray(values, dtype=np.float64)[tissue]
    lesion = tissue == _LESION_T
    if modality == "CT":
        base[lesion] += shift[lesion]
        image = base.astype(np.float32)
        image[body] += bias[body]
        image += noise.astype(np.float32)
        return np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    base[lesion] += 3.0 * shift[lesion]
    signal = base * (1.0 + 0.005 * bias)  # multiplicative bias, +-10% or so
    quadrature = extra.normal(0, 1, size=tissue.shape) * noise.std()
    magnitude = np.sqrt((signal + noise) ** 2 + quadrature**2)  # Rician: magnitude of complex Gaussian noise
    image = np.where(body, np.maximum(np.rint(magnitude), 1), 0)  # zero outside the body, nonzero inside
    return np.clip(image, 0, _INT16[1]).astype(np.int16)


def _decoy(reference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pure Gaussian noise with the mean and standard deviation of ``reference``."""
    ref = reference.astype(np.float64)
    noise = rng.normal(ref.mean(), max(ref.std(), 1.0), size=ref.shape)
    return np.clip(np.rint(noise), *_INT16).astype(np.int16)


def _ras_affine(shape: tuple[int, ...], spacing: tuple[float, float, float]) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, spacing, strict=True)]
    return affine


def _to_lps(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same physical image stored with the first two voxel axes reversed (LPS orientation)."""
    nx, ny = data.shape[:2]
    flip = np.array([[-1, 0, 0, nx - 1], [0, -1, 0, ny - 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    return np.ascontiguousarray(data[::-1, ::-1]), affine @ flip


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

    Returns the path of ``dataset.json``. Folders imagesTr/, labelsTr/, imagesTs/, labelsTs/.
    MSD layout: files ``case_000.nii.gz`` (4D, channels last, when ``channels > 1``), and a
    ``dataset.json`` whose ``test`` list holds ``{"image", "label"}`` pairs because held-out labels
    are written too. nnU-Net v2 layout: images ``case_000_0000.nii.gz .. case_000_{C-1:04d}``,
    labels ``case_000.nii.gz``, and a ``dataset.json`` with ``channel_names``, ``labels``
    (``{"background": 0, ...}``), ``numTraining`` and ``file_ending``.
    """
    cfg.validate()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    streams = np.random.SeedSequence(cfg.seed).spawn(cfg.train_cases + cfg.test_cases)
    training, test = [], []
    for k, stream in enumerate(streams):
        image, label = synthesise_case(cfg, stream)
        affine = _ras_affine(label.shape, cfg.spacing)
        if cfg.lps_every and k % cfg.lps_every == cfg.lps_every - 1:
            image = np.stack([_to_lps(ch, affine)[0] for ch in image])
            label, affine = _to_lps(label, affine)
        is_train = k < cfg.train_cases
        cid = f"case_{k:03d}"
        images_dir, labels_dir = ("imagesTr", "labelsTr") if is_train else ("imagesTs", "labelsTs")
        if cfg.layout == "nnunet":
            for c, channel in enumerate(image):
                _write_nifti(out / images_dir / f"{cid}_{c:04d}.nii.gz", channel, affine)
        else:
            data = image[0] if cfg.channels == 1 else np.ascontiguousarray(np.moveaxis(image, 0, -1))
            _write_nifti(out / images_dir / f"{cid}.nii.gz", data, affine)
        _write_nifti(out / labels_dir / f"{cid}.nii.gz", label, affine)
        entry = {"image": f"./{images_dir}/{cid}.nii.gz", "label": f"./{labels_dir}/{cid}.nii.gz"}
        (training if is_train else test).append(entry)
    dataset_json = out / "dataset.json"
    atomic_write_text(dataset_json, json.dumps(_dataset_json(cfg, training, test), indent=2) + "\n")
    return dataset_json


def _options(cfg: SynthConfig) -> dict[str, Any]:
    """The options that differ from the default dataset (recorded in dataset.json)."""
    default = SynthConfig()
    names = ("lesion_radius_mm", "lesions", "noise_hu", "channels", "decoy_channel", "layout", "regions",
             "vessels", "modality")
    return {n: (list(v) if isinstance(v, tuple) else v) for n in names if (v := getattr(cfg, n)) != getattr(default, n)}


def _dataset_json(cfg: SynthConfig, training: list[dict[str, str]], test: list[dict[str, str]]) -> dict[str, Any]:
    kind = "CT" if cfg.modality == "CT" else "MRI"
    structures = "organ rim (1), core (2) and lesions (3)" if cfg.regions else "organ (1) and small lesions (2)"
    meta: dict[str, Any] = {
        "name": f"SyntheticAbdomen{cfg.modality}",
        "description": f"Synthetic {kind}-like abdomen phantoms: {structures}"
                       + (", vessels" if cfg.vessels else ""),
        "reference": "medseg synth",
        "licence": "CC0-1.0",
        "release": "1.0",
    }
    labels = label_map(cfg)
    if cfg.layout == "nnunet":
        meta.update({"channel_names": channel_names(cfg), "labels": labels, "numTraining": len(training),
                     "file_ending": ".nii.gz"})
    else:
        meta.update({"tensorImageSize": "3D" if cfg.channels == 1 else "4D", "modality": channel_names(cfg),
                     "labels": labels, "numTraining": len(training), "numTest": len(test), "training": training,
                     "test": test})
    if cfg.regions:
        meta["regions_class_order"] = [1, 2, 3, 4] if cfg.vessels else [1, 2, 3]
    meta.update({"spacing_mm": list(cfg.spacing), "seed": cfg.seed})
    if _options(cfg):
        meta["synth_options"] = _options(cfg)
    return meta
