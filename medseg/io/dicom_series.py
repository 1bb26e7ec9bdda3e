"""DICOM input discovery: every file under a folder, at any depth, grouped into series and checked.

A folder may hold one series, a study, or a PACS export of several studies. Each file is read
header-only (pydicom, ``stop_before_pixels``); files that are not DICOM, and DICOMDIR index files,
are passed over. Files are grouped by SeriesInstanceUID; each image (a single-frame file, or one
frame of a multi-frame file) becomes a :class:`SliceHeader`, and each series is checked once by
:func:`medseg.io.dicom_checks.check_series`, which either sorts its slices along their normal or
states why the series cannot be a volume. Only headers are kept, never pixel data: memory grows
with the number of files by a few hundred bytes each.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.io.dicom_checks import check_series, orientation_name
from medseg.io.dicom_libs import quiet_dicom_libraries, require_pydicom

__all__ = ["SliceHeader", "DicomSeries", "slice_headers", "discover_series", "select_series", "series_table", "series_csv",
           "SERIES_CSV_FIELDS"]

logger = logging.getLogger(__name__)

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
SERIES_CSV_FIELDS = ("series_uid", "study_uid", "modality", "series_number", "description", "slices", "shape",
                     "spacing_mm", "orientation", "status", "reason", "output")


@dataclass(frozen=True)
class SliceHeader:
    """One image plane: a single-frame file, or one frame (1-based ``frame``) of a multi-frame file.

    Geometry is DICOM's, in LPS patient coordinates (mm); ``None`` where the file does not carry it.
    ``pixel_spacing`` is (between rows, between columns), as DICOM's PixelSpacing.
    """

    path: Path
    frame: int | None
    sop_instance_uid: str
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    image_type: tuple[str, ...] = ()
    frame_of_reference_uid: str = ""


@dataclass
class DicomSeries:
    """A series found on disk: what it is, its slices (sorted along the normal once checked) and its verdict."""

    uid: str
    modality: str
    description: str
    study_uid: str
    number: int | None
    slices: list[SliceHeader] = field(default_factory=list)
    reason: str | None = None
    slice_spacing: float | None = None

    @property
    def qualifies(self) -> bool:
        return self.reason is None

    @property
    def files(self) -> list[Path]:
        """The series' files in slice order (a multi-frame series: its one file)."""
        return list(dict.fromkeys(s.path for s in self.slices))

    @property
    def multiframe(self) -> bool:
        return any(s.frame is not None for s in self.slices)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxel grid (columns, rows, slices): the order of the NIfTI volume read from it."""
        first = self.slices[0]
        return first.columns, first.rows, len(self.slices)

    def row(self, output: str = "") -> dict[str, str]:
        """The series' line in the series table and ``series.csv`` (fields :data:`SERIES_CSV_FIELDS`)."""
        first = self.slices[0]
        spacing = ""
        if first.pixel_spacing and self.slice_spacing:
            spacing = "x".join(f"{v:.3g}" for v in (first.pixel_spacing[1], first.pixel_spacing[0], self.slice_spacing))
        values = [self.uid, self.study_uid, self.modality, "" if self.number is None else str(self.number),
                  self.description, str(len(self.slices)), "x".join(map(str, self.shape)), spacing,
                  orientation_name(first.orientation) if first.orientation else "",
                  "ok" if self.qualifies else "skipped", self.reason or "", output]
        return dict(zip(SERIES_CSV_FIELDS, values, strict=True))


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _functional_item(ds: Any, index: int, sequence: str) -> Any:
    """Item of a functional-group macro for frame ``index`` (0-based): per-frame if present, else shared."""
    for groups, i in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        seq = items[i].get(sequence) if items and i < len(items) else None
        if seq:
            return seq[0]
    return None


def slice_headers(ds: Any, path: Path) -> list[SliceHeader]:
    """One :class:`SliceHeader` per image plane of ``ds`` (the file at ``path``)."""
    common = {"path": path, "sop_instance_uid": str(ds.get("SOPInstanceUID", "")), "rows": int(ds.get("Rows", 0)),
              "columns": int(ds.get("Columns", 0)), "image_type": tuple(str(v) for v in ds.get("ImageType", ()) or ()),
              "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", ""))}
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" not in ds and frames == 1:
        return [SliceHeader(frame=None, position=_floats(ds.get("ImagePositionPatient"), 3),
                            orientation=_floats(ds.get("ImageOrientationPatient"), 6),
                            pixel_spacing=_floats(ds.get("PixelSpacing"), 2), **common)]
    out = []
    for i in range(frames):
        pos, ori, mea = (_functional_item(ds, i, s) for s in
                         ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence"))
        out.append(SliceHeader(frame=i + 1, position=_floats(pos and pos.get("ImagePositionPatient"), 3),
                               orientation=_floats(ori and ori.get("ImageOrientationPatient"), 6),
                               pixel_spacing=_floats(mea and mea.get("PixelSpacing"), 2), **common))
    return out


def _read_header(pydicom: Any, path: Path) -> Any:
    """Header of ``path``, or ``None`` when it is not a DICOM image file (or is a DICOMDIR)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
        return None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_SOP_CLASS:
        return None
    return ds if "SeriesInstanceUID" in ds else None


def _new_series(ds: Any) -> DicomSeries:
    number = ds.get("SeriesNumber")
    return DicomSeries(uid=str(ds.SeriesInstanceUID), modality=str(ds.get("Modality", "") or ""),
                       description=str(ds.get("SeriesDescription", "") or ""),
                       study_uid=str(ds.get("StudyInstanceUID", "") or ""),
                       number=int(number) if number not in (None, "") else None)


def discover_series(root: str | Path) -> list[DicomSeries]:
    """Every DICOM series under ``root`` (a folder, searched at any depth, or one file), checked.

    Series are ordered by study, series number and UID; each carries its verdict (``reason`` is
    ``None`` when it qualifies as a CT/MR volume) and, if it qualifies, its slices sorted along the
    normal. An empty list means no DICOM file was found.
    """
    pydicom = require_pydicom()
    base = Path(root)
    paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
    found: dict[str, DicomSeries] = {}
    with quiet_dicom_libraries():
        for path in paths:
            ds = _read_header(pydicom, path)
            if ds is None:
                continue
            series = found.setdefault(str(ds.SeriesInstanceUID), _new_series(ds))
            series.slices.extend(slice_headers(ds, path))
    out = []
    for series in found.values():
        reason, ordered, spacing = check_series(series.modality, series.slices)
        out.append(replace(series, slices=ordered, reason=reason, slice_spacing=spacing))
    out.sort(key=lambda s: (s.study_uid, s.number if s.number is not None else -1, s.uid))
    logger.debug("%s: %d DICOM series, %d qualify", base, len(out), sum(s.qualifies for s in out))
    return out


def select_series(found: Sequence[DicomSeries], uids: Iterable[str] | None, where: str) -> list[DicomSeries]:
    """The series to predict: those named in ``uids`` (each must exist), else every series found.

    Raises:
        InputError: a UID that names no series under ``where``, or a single selected series that does
            not qualify (the reason is given).
    """
    wanted = list(dict.fromkeys(uids or ()))
    if not wanted:
        return list(found)
    by_uid = {s.uid: s for s in found}
    missing = [u for u in wanted if u not in by_uid]
    if missing:
        raise InputError(f"--series-uid: {', '.join(missing)} not found under {where} "
                         f"(series there: {', '.join(by_uid) or 'none'})")
    chosen = [by_uid[u] for u in wanted]
    if len(chosen) == 1 and not chosen[0].qualifies:
        raise InputError(f"{where}: series {chosen[0].uid} cannot be predicted: {chosen[0].reason}")
    return chosen


def series_table(found: Sequence[DicomSeries]) -> str:
    """A fixed-width text table of the series (one line each) for the terminal."""
    cols = ("series_uid", "modality", "description", "slices", "spacing_mm", "orientation", "status", "reason")
    rows = [[s.row()[c] for c in cols] for s in found]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)] if rows else [len(c) for c in cols]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def series_csv(found: Sequence[DicomSeries], outputs: dict[str, str] | None = None) -> str:
    """``series.csv`` text: one row per series (:data:`SERIES_CSV_FIELDS`), ``output`` the file written for it."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SERIES_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for s in found:
        writer.writerow(s.row((outputs or {}).get(s.uid, "")))
    return buf.getvalue()
