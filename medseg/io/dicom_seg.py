"""DICOM SEG output: a predicted label map as a BINARY segmentation of its source series (highdicom).

One segment per foreground label, or per region (regions overlap: a voxel may belong to several).
Frames are the source slices: frame ``k`` of every segment is slice ``k`` of the volume, which is
the source image listed ``k``-th in :attr:`DicomSeries.slices` (or frame ``k`` of a multi-frame
source), so highdicom copies each source plane's position, orientation and pixel spacing into the
SEG and references that source instance; nothing is resampled. Patient, study and frame of reference
are the source's; the series and instance are new. Empty frames are omitted; an empty prediction
still writes a valid SEG (every frame kept, all zero).

Segment codes: ``label_codes`` maps a label or region name to its SNOMED CT (or other) category and
type, each ``[scheme, value, meaning]``, e.g. ``{"liver": {"category": ["SCT", "123037004",
"Anatomical Structure"], "type": ["SCT", "10200004", "Liver"]}}``. A segment without an entry gets
the generic category and type "Tissue" (SCT 85756007), and a warning names it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.io.dicom_libs import quiet_dicom_libraries, require_highdicom, require_pydicom
from medseg.io.dicom_series import DicomSeries
from medseg.utils.files import atomic_path

__all__ = ["Segment", "segments_for", "parse_label_codes", "write_dicom_seg", "SEG_SUFFIX", "GENERIC_CODE"]

logger = logging.getLogger(__name__)

SEG_SUFFIX = ".seg.dcm"
GENERIC_CODE = ("SCT", "85756007", "Tissue")
_CODE_KEYS = ("category", "type")


@dataclass(frozen=True)
class Segment:
    """One SEG segment: its label, the label-map values it covers, and its category and type codes."""

    label: str
    values: tuple[int, ...]
    category: tuple[str, str, str] = GENERIC_CODE
    type: tuple[str, str, str] = GENERIC_CODE


def _code(raw: Any, where: str) -> tuple[str, str, str]:
    if not (isinstance(raw, (list, tuple)) and len(raw) == 3 and all(isinstance(v, str) and v for v in raw)):
        raise InputError(f"{where}: expected [scheme, value, meaning] (three non-empty strings), got {raw!r}")
    return raw[0], raw[1], raw[2]


def parse_label_codes(raw: Any, source: str) -> dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]]:
    """``{name: (category, type)}`` from a ``label_codes`` map (see the module docstring).

    Raises:
        InputError: not a mapping of names to ``{"category": [...], "type": [...]}``; names the entry.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InputError(f"{source}: label_codes must map label names to codes, got {type(raw).__name__}")
    out = {}
    for name, entry in raw.items():
        where = f"{source}: label_codes[{name!r}]"
        if not isinstance(entry, Mapping) or set(entry) != set(_CODE_KEYS):
            raise InputError(f"{where}: expected {{\"category\": [scheme, value, meaning], \"type\": [...]}}")
        out[str(name)] = (_code(entry["category"], f"{where}.category"), _code(entry["type"], f"{where}.type"))
    return out


def segments_for(labels: Mapping[int, str], regions: Mapping[str, Sequence[int]] | None = None,
                 label_codes: Mapping[str, tuple[tuple[str, str, str], tuple[str, str, str]]] | None = None
                 ) -> list[Segment]:
    """The segments of a model's output: one per foreground label (value > 0), or one per region.

    A name without an entry in ``label_codes`` gets :data:`GENERIC_CODE` and a warning.
    """
    named = [(name, tuple(int(v) for v in values)) for name, values in regions.items()] if regions else \
        [(name, (int(value),)) for value, name in sorted(labels.items()) if int(value) > 0]
    codes = dict(label_codes or {})
    generic = [name for name, _ in named if name not in codes]
    if generic:
        logger.warning("DICOM SEG: no label_codes entry for %s; using the generic code %s (%s %s)",
                       ", ".join(generic), GENERIC_CODE[2], GENERIC_CODE[0], GENERIC_CODE[1])
    return [Segment(name, values, *codes.get(name, (GENERIC_CODE, GENERIC_CODE))) for name, values in named]


def _descriptions(hd: Any, segments: Sequence[Segment], algorithm: str, version: str) -> list[Any]:
    from pydicom.sr.coding import Code

    ident = hd.AlgorithmIdentificationSequence(name=algorithm[:64], version=version[:64],
                                               family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"))
    return [hd.seg.SegmentDescription(
        segment_number=i, segment_label=s.label[:64],
        segmented_property_category=Code(s.category[1], s.category[0], s.category[2]),
        segmented_property_type=Code(s.type[1], s.type[0], s.type[2]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=ident)
        for i, s in enumerate(segments, start=1)]


def _frames(label_map: np.ndarray, series: DicomSeries, segments: Sequence[Segment]) -> np.ndarray:
    """``(frames, rows, columns, segments)`` uint8 binary stack, frames in the order of the source images."""
    if tuple(label_map.shape) != series.shape:
        raise ValueError(f"label map shape {tuple(label_map.shape)} is not the series grid {series.shape} "
                         "(columns, rows, slices)")
    planes = np.asarray(label_map).transpose(2, 1, 0)
    if series.multiframe:  # highdicom pairs frame i with the source file's frame i: file order, not slice order
        planes = planes[np.argsort([s.frame for s in series.slices])]
    return np.stack([np.isin(planes, s.values) for s in segments], axis=-1).astype(np.uint8)


def write_dicom_seg(label_map: np.ndarray, series: DicomSeries, segments: Sequence[Segment], out_path: str | Path,
                    algorithm: str, version: str | None = None, series_number: int = 901) -> Path:
    """Write ``label_map`` (on the series grid) as a BINARY DICOM SEG of ``series`` at ``out_path``.

    Args:
        label_map: integer array of shape (columns, rows, slices), the voxel grid of
            :func:`medseg.io.dicom_volume.read_series_volume` for ``series``.
        series: the qualifying source series.
        segments: what to encode (:func:`segments_for`); segment ``i`` covers the voxels whose value is
            in ``segments[i - 1].values``.
        out_path: file to write (its folder is created).
        algorithm: the model's name, recorded in each segment's algorithm identification.
        version: the medseg version recorded there and as the software version (default: installed one).
        series_number: SeriesNumber of the new SEG series.

    Returns:
        ``out_path``.
    """
    import medseg

    hd = require_highdicom("DICOM SEG output")
    pydicom = require_pydicom("DICOM SEG output")
    if not segments:
        raise InputError(f"DICOM SEG for series {series.uid}: the model has no foreground label to encode")
    version = version or medseg.__version__
    frames = _frames(label_map, series, segments)
    with quiet_dicom_libraries():
        sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in series.files]
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_descriptions(hd, segments, algorithm, version),
            series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="medseg", manufacturer_model_name=algorithm[:64], software_versions=f"medseg {version}",
            device_serial_number="0", series_description=f"medseg {algorithm}"[:64],
            content_label="MEDSEG", content_description=f"medseg {version} prediction ({algorithm})"[:64],
            omit_empty_frames=bool(frames.any()))
        with atomic_path(out_path) as tmp:
            seg.save_as(tmp)
    return Path(out_path)
