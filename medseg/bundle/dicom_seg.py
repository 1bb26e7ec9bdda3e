"""DICOM in a bundle's inference: the series under a DICOM folder as cases, and DICOM SEG out.

:func:`inference_datalist` is the inference config's datalist: a dataset's test images, a folder of
NIfTI files, or a DICOM folder at any depth, where each qualifying series (checked as by ``medseg
predict``; the series table is logged) is converted once to ``<work_dir>/<case>.nii.gz`` on its own
grid, beside ``<case>.dicom.json`` naming its folder and SeriesInstanceUID. :class:`SaveDicomSegd`,
switched on by the config's ``write_dicom_seg``, writes each prediction whose image came from a series
as ``<output_dir>/<case>.seg.dcm``: one segment per label (or region) of the plan, codes from
``label_codes``, so a bundle can sit in a clinical pipeline that expects DICOM SEG.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import MapTransform

__all__ = ["inference_datalist", "SaveDicomSegd", "SIDECAR_SUFFIX"]

SIDECAR_SUFFIX = ".dicom.json"


def _work_dir(work_dir: str | None) -> Path:
    if work_dir:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        return Path(work_dir)
    tmp = tempfile.mkdtemp(prefix="medseg-bundle-dicom-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return Path(tmp)


def inference_datalist(dataset_dir: str, part: str = "test", work_dir: str | None = None,
                       series_uids: list[str] | None = None) -> list[dict[str, str]]:
    """``[{"image": path}]``: :func:`medseg.bundle.components.image_datalist`, or the series of a DICOM folder.

    Args:
        dataset_dir: a dataset (with ``dataset.json``), a folder of NIfTI files, or DICOM (any depth).
        part: the dataset part for a dataset folder (``test`` or ``training``).
        work_dir: where DICOM series are written as NIfTI (default: a temporary folder removed at exit).
        series_uids: DICOM only: predict these series (default: every qualifying one).
    """
    from medseg.bundle.components import image_datalist
    from medseg.inference.dicom_cases import find_dicom_inputs
    from medseg.io.dicom_volume import write_series_nifti

    root = Path(dataset_dir)
    dicom = None if (root / "dataset.json").is_file() else find_dicom_inputs(root, series_uids)
    if dicom is None:
        return image_datalist(dataset_dir, part)
    out = _work_dir(work_dir)
    items = []
    for case, series in dicom.cases:
        image = write_series_nifti(series, out / f"{case}.nii.gz")
        (out / f"{case}{SIDECAR_SUFFIX}").write_text(json.dumps({"root": str(root.resolve()),
                                                                 "series_uid": series.uid}), encoding="utf-8")
        items.append({"image": str(image)})
    return items


class SaveDicomSegd(MapTransform):
    """Write ``data[key]`` (a label map on the image's grid) as DICOM SEG when the image came from a series.

    Args:
        keys: the prediction key (one), a ``(1, X, Y, Z)`` or ``(X, Y, Z)`` label map whose meta data
            names the image file (as after ``Invertd`` and ``AsDiscreted``).
        output_dir: folder for ``<case>.seg.dcm``.
        plan: the bundle's plan (its labels or regions become the segments).
        label_codes: ``{name: {"category": [...], "type": [...]}}`` (:mod:`medseg.io.dicom_seg`).
        algorithm: the model's name recorded in the SEG.
        enabled: the config switch (``write_dicom_seg``); ``False`` passes data through.
    """

    def __init__(self, keys: Any, output_dir: str, plan: Any, label_codes: Mapping[str, Any] | None = None,
                 algorithm: str = "medseg bundle", enabled: bool = True) -> None:
        super().__init__(keys)
        self.output_dir, self.plan, self.algorithm, self.enabled = Path(output_dir), plan, algorithm, bool(enabled)
        self.label_codes = dict(label_codes or {})
        self._found: dict[str, list[Any]] = {}

    def _series(self, image: str) -> Any:
        from medseg.io.dicom_series import discover_series

        sidecar = Path(image[: -len(".nii.gz")] + SIDECAR_SUFFIX) if image.endswith(".nii.gz") else None
        if sidecar is None or not sidecar.is_file():
            return None
        ref = json.loads(sidecar.read_text(encoding="utf-8"))
        if ref["root"] not in self._found:  # one discovery per DICOM folder, not per case
            self._found[ref["root"]] = discover_series(ref["root"])
        return next(s for s in self._found[ref["root"]] if s.uid == ref["series_uid"])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from medseg.io.dicom_seg import parse_label_codes, segments_for, write_dicom_seg

        d = dict(data)
        if not self.enabled:
            return d
        for key in self.key_iterator(d):
            pred = d[key]
            image = str(getattr(pred, "meta", {}).get("filename_or_obj", ""))
            series = self._series(image)
            if series is None:
                continue
            labels = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred)
            labels = labels[0] if labels.ndim == 4 else labels
            spec = self.plan.label_spec
            segments = segments_for(spec.names, spec.regions, parse_label_codes(self.label_codes, "label_codes"))
            case = Path(image).name[: -len(".nii.gz")]
            write_dicom_seg(labels.astype(np.uint8), series, segments, self.output_dir / f"{case}.seg.dcm",
                            algorithm=self.algorithm)
        return d
