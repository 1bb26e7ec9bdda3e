"""Per-volume checks of a dataset case: the files decompress completely, headers agree, values are sane.

What is checked (errors unless marked *warning*), for one case's image and label files:

- every file exists, is not empty and decompresses *completely* (a ``.gz`` stream is read to its
  end so its CRC-32 and length are verified); the voxel data is as long as the header says;
- NIfTI headers: when both ``qform_code`` and ``sform_code`` are set, the two transforms agree;
- dimensionality and channels: labels are 3D; an image has the declared channel count; channel
  files of one case share one geometry;
- image vs label: same shape and, within :class:`Tolerances`, same spacing, origin and direction;
- values: no NaN or Inf in images, integral label values that belong to the label map.

:mod:`medseg.data.check` lists the cases and gathers these findings into one report.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medseg.utils.geometry import spacing_from_affine

__all__ = ["Problem", "Tolerances", "Case", "check_case", "err", "warn", "ERROR", "WARNING", "SHOWN"]

ERROR, WARNING = "error", "warning"
SHOWN = 8  # offending values listed per problem

@dataclass(frozen=True)
class Problem:
    """One finding: ``severity`` ("error" or "warning"), the ``file``, what is wrong, the values seen."""

    severity: str
    file: str
    problem: str
    values: str = ""

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}" + (f" [seen: {self.values}]" if self.values else "")


@dataclass(frozen=True)
class Tolerances:
    """How close image and label geometry must be (the same spacing/origin/direction otherwise).

    ``spacing_rtol``: relative, per axis. ``origin_atol_mm``: per coordinate. ``direction_atol``:
    per direction-cosine entry. ``qform_sform_voxels``: largest distance, in voxels, that the qform
    and the sform may place any corner of the grid apart. ``label_atol``: a label value further
    than this from an integer is not an integer.
    """

    spacing_rtol: float = 1e-5
    origin_atol_mm: float = 1e-4
    direction_atol: float = 1e-5
    qform_sform_voxels: float = 1e-3
    label_atol: float = 1e-6


@dataclass(frozen=True)
class Case:
    kind: str  # "training" or "test"
    images: tuple[Path, ...]  # one file per channel (nnU-Net) or one file holding all (MSD)
    label: Path | None
    channels: int  # channels declared in dataset.json


def err(file: object, problem: str, values: object = "") -> Problem:
    return Problem(ERROR, str(file), problem, str(values))


def warn(file: object, problem: str, values: object = "") -> Problem:
    return Problem(WARNING, str(file), problem, str(values))


@dataclass
class _Volume:
    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray  # voxel -> RAS mm
    data: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.asarray(spacing_from_affine(self.affine, 3))

    @property
    def direction(self) -> np.ndarray:
        return self.affine[:3, :3] / np.where(self.spacing > 0, self.spacing, 1.0)


def check_case(case: Case, labels: set[int] | None, tol: Tolerances) -> list[Problem]:
    out: list[Problem] = []
    try:
        _check_case_files(case, labels, tol, out)
    except Exception as exc:  # a file shaped like nothing foreseen: report it, check the other cases
        out.append(err(case.label or case.images[0], f"could not be checked: {type(exc).__name__}: {exc}"))
    return out


def _check_case_files(case: Case, labels: set[int] | None, tol: Tolerances, out: list[Problem]) -> None:
    images = [_read(f, out, tol) for f in case.images]
    for vol in images:
        if vol is not None:
            _check_image(vol, case.channels, out)
    first = next((v for v in images if v is not None), None)
    for vol in images[1:]:  # channel files of one case share one voxel grid
        if vol is not None and first is not None:
            _compare_geometry(first, vol, tol, out, what="channel file")
    label = _read(case.label, out, tol, what="label file") if case.label is not None else None
    if label is not None:
        _check_label(label, labels, tol, out)
        for vol in images:
            if vol is not None:
                _compare_geometry(vol, label, tol, out)


def _read(path: Path, out: list[Problem], tol: Tolerances, what: str = "image file") -> _Volume | None:
    """Read a volume completely; on any failure append the problem and return None."""
    if not path.exists():
        out.append(err(path, f"{what} not found"))
        return None
    if not path.is_file():
        out.append(err(path, f"{what} is not a regular file"))
        return None
    size = path.stat().st_size
    if size == 0:
        out.append(err(path, f"empty {what}", "0 bytes"))
        return None
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return _read_sitk(path, out)
    if name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as fh:  # reading to EOF verifies the CRC-32 and the length
                raw = fh.read()
        except EOFError:
            out.append(err(path, "truncated gzip stream: the file ends before the end-of-stream marker "
                                  "(incomplete download or copy?)", f"{size} bytes on disk"))
            return None
        except (gzip.BadGzipFile, zlib.error, OSError) as exc:
            out.append(err(path, f"corrupted gzip stream: {exc}", f"{size} bytes on disk"))
            return None
    else:
        raw = path.read_bytes()
    if len(raw) < 348:
        out.append(err(path, "not a NIfTI file: shorter than a NIfTI header", f"{len(raw)} bytes"))
        return None
    sizeof_hdr = int.from_bytes(raw[:4], "little")
    klass = nib.Nifti2Image if sizeof_hdr in (540, int.from_bytes((540).to_bytes(4, "big"), "little")) \
        else nib.Nifti1Image
    try:
        img = klass.from_bytes(raw)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for damaged headers/data
        out.append(err(path, f"not a readable NIfTI file: {' '.join(str(exc).split())}"))
        return None
    shape = tuple(int(s) for s in data.shape)
    if data.size == 0:
        out.append(err(path, "the volume has no voxels", f"shape {shape}"))
        return None
    _check_qform_sform(path, img, shape, tol, out)
    return _Volume(path, shape, np.asarray(img.affine, dtype=np.float64), data)


def _read_sitk(path: Path, out: list[Problem]) -> _Volume | None:
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        out.append(err(path, f"not a readable image: {' '.join(str(exc).split())[:300]}"))
        return None
    data = sitk.GetArrayFromImage(img)  # a copy: a view dies with the image
    dim = img.GetDimension()
    data = np.transpose(data, tuple(range(dim - 1, -1, -1)) + tuple(range(dim, data.ndim)))
    affine = np.eye(4)
    if dim >= 3:
        d = np.array(img.GetDirection()).reshape(dim, dim)[:3, :3]
        affine[:3, :3] = d * np.array(img.GetSpacing()[:3])
        affine[:3, 3] = img.GetOrigin()[:3]
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    return _Volume(path, tuple(int(s) for s in data.shape), affine, np.asarray(data))


def _check_qform_sform(path: Path, img: Any, shape: tuple[int, ...], tol: Tolerances, out: list[Problem]) -> None:
    qform, qcode = img.header.get_qform(coded=True)
    sform, scode = img.header.get_sform(coded=True)
    if not (qcode and scode and qform is not None and sform is not None):
        return
    n = [*shape[:3], 1, 1, 1][:3]
    ijk = np.array([[i, j, k, 1.0] for i in (0, n[0] - 1) for j in (0, n[1] - 1) for k in (0, n[2] - 1)]).T
    dist = float(np.max(np.linalg.norm((qform @ ijk - sform @ ijk)[:3], axis=0)))
    spacing = float(np.min(np.linalg.norm(sform[:3, :3], axis=0))) or 1.0
    if dist > tol.qform_sform_voxels * spacing:
        out.append(err(path, f"qform and sform disagree (codes {int(qcode)}/{int(scode)}): they place voxels up to "
                              f"{dist:.4g} mm apart, so nibabel and SimpleITK would read different geometry",
                        f"qform {_fmt(qform[:3])}, sform {_fmt(sform[:3])}"))


def _check_image(vol: _Volume, channels: int, out: list[Problem]) -> None:
    shape, data = vol.shape, vol.data
    if channels == 1 and len(shape) == 4 and shape[3] == 1:
        out.append(warn(vol.path, "image has a singleton 4th dimension; read as 3D", f"shape {shape}"))
    elif channels == 1 and len(shape) != 3:
        out.append(err(vol.path, f"image is {len(shape)}D but a 3D single-channel volume is expected "
                                  "(dataset.json declares 1 channel)", f"shape {shape}"))
    elif channels > 1 and (len(shape) != 4 or shape[3] != channels):
        out.append(err(vol.path, f"image should be 4D with {channels} channels in the 4th dimension "
                                  "(dataset.json declares that many)", f"shape {shape}"))
    if np.issubdtype(data.dtype, np.complexfloating) or data.dtype.names:
        out.append(err(vol.path, "unsupported voxel type (complex or RGB)", data.dtype))
        return
    lo, hi = data.min(), data.max()
    if np.issubdtype(data.dtype, np.floating) and not (np.isfinite(lo) and np.isfinite(hi)):
        n_nan, n_inf = int(np.isnan(data).sum()), int(np.isinf(data).sum())
        found = [f"{n_nan} NaN" if n_nan else "", f"{n_inf} Inf" if n_inf else ""]
        first = np.argwhere(~np.isfinite(data))[0].tolist()
        out.append(err(vol.path, "image contains non-finite values (NaN/Inf)",
                        f"{', '.join(x for x in found if x)} voxel(s), first at index {first}"))
    elif lo == hi:
        out.append(warn(vol.path, "image is constant", f"every voxel = {lo}"))


def _check_label(vol: _Volume, labels: set[int] | None, tol: Tolerances, out: list[Problem]) -> None:
    shape, data = vol.shape, vol.data
    if len(shape) == 4 and shape[3] == 1:
        out.append(warn(vol.path, "label has a singleton 4th dimension; read as 3D", f"shape {shape}"))
    elif len(shape) != 3:
        out.append(err(vol.path, f"label is {len(shape)}D; a label map must be one 3D volume", f"shape {shape}"))
    if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        lo, hi = int(data.min()), int(data.max())
        if hi - lo <= 64:  # the usual few classes: one comparison pass each, no sort, no copy
            values = np.array([v for v in range(lo, hi + 1) if v in (lo, hi) or (data == v).any()], np.float64)
        elif hi - lo < 1 << 16:
            counts = np.bincount((data.astype(np.int64) - lo).ravel(order="K"))
            values = (np.nonzero(counts)[0] + lo).astype(np.float64)
        else:
            values = np.unique(data).astype(np.float64)
    elif np.issubdtype(data.dtype, np.floating):
        values = np.unique(data).astype(np.float64)
    else:
        out.append(err(vol.path, "unsupported label voxel type", data.dtype))
        return
    finite = values[np.isfinite(values)]
    if finite.size < values.size:
        out.append(err(vol.path, "label contains NaN/Inf", ", ".join(map(str, values[~np.isfinite(values)]))))
    nearest = np.round(finite)
    off = np.abs(finite - nearest) > tol.label_atol
    if off.any():
        bad = finite[off]
        shown = ", ".join(f"{v:.6g}" for v in bad[:SHOWN]) + (f" ... ({bad.size} values)" if bad.size > SHOWN else "")
        near = np.abs(bad - np.round(bad)) <= 1e-3
        hint = (f"stored as inexact floats (an int cast truncates {bad[0]:.6g} to {int(bad[0])}); round the "
                "label before saving" if near.all()
                else "not a label map of integers (an interpolated or probability image?)")
        out.append(err(vol.path, f"label values are not integers: {hint}", shown))
    ints = sorted({int(v) for v in nearest})
    if labels is not None:
        unexpected = [v for v in ints if v not in labels]
        if unexpected:
            out.append(err(vol.path, f"label values outside the dataset.json label map {sorted(labels)}",
                            ", ".join(map(str, unexpected[:SHOWN]))))
    if ints == [0] and not off.any():
        out.append(warn(vol.path, "label is background only (every voxel is 0)"))


def _compare_geometry(image: _Volume, label: _Volume, tol: Tolerances, out: list[Problem], what: str = "label",
                      ) -> None:
    where = f"{what} vs {'its image' if what == 'label' else 'channel 0'} {image.path}"
    if image.shape[:3] != label.shape[:3]:
        out.append(err(label.path, f"shape differs: {where}", f"{what} {label.shape[:3]}, image {image.shape[:3]}"))
    if not np.allclose(label.spacing, image.spacing, rtol=tol.spacing_rtol, atol=1e-8):
        out.append(err(label.path, f"spacing differs: {where}",
                        f"{what} {_fmt(label.spacing)} mm, image {_fmt(image.spacing)} mm"))
    if not np.allclose(label.affine[:3, 3], image.affine[:3, 3], rtol=0, atol=tol.origin_atol_mm):
        out.append(err(label.path, f"origin differs: {where}",
                        f"{what} {_fmt(label.affine[:3, 3])} mm, image {_fmt(image.affine[:3, 3])} mm"))
    if not np.allclose(label.direction, image.direction, rtol=0, atol=tol.direction_atol):
        out.append(err(label.path, f"direction differs: {where}",
                        f"{what} {_fmt(label.direction)}, image {_fmt(image.direction)}"))


def _fmt(a: np.ndarray) -> str:
    return np.array2string(np.asarray(a, dtype=np.float64), precision=4, suppress_small=True,
                           separator=", ", max_line_width=10_000).replace("\n", "")
