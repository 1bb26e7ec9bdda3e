"""Predict segmentation masks with sliding-window inference (Gaussian blending), one model or an ensemble.

Each output is a NIfTI mask with the input's exact shape, affine and orientation, integer dtype,
named after its case, written atomically into --output. Several --model runs (e.g. the folds of a
cross-validation) are averaged; --tta averages the 8 mirrorings; the post-processing that
`medseg crossval` decided from validation is applied unless --no-postprocess. DICOM input: every
series under the folder is listed and checked (the table is logged, series.csv is written beside the
masks), each qualifying CT/MR series is a case, and --output-format dicom-seg|both writes DICOM SEG.
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, nargs="+", metavar="RUN",
                        help="training run directory or checkpoint file (.pt); several: an ensemble")
    parser.add_argument("--input", required=True, help="a NIfTI file, a folder of them (4D files or nnU-Net "
                        "CASE_XXXX channel files), or DICOM: a folder at any depth (one series, a study, a PACS "
                        "export; every series listed and checked) or a multi-frame file")
    parser.add_argument("--series-uid", nargs="+", metavar="UID",
                        help="DICOM input: predict only these SeriesInstanceUIDs (default: every qualifying series)")
    parser.add_argument("--output-format", default="nifti", choices=("nifti", "dicom-seg", "both"),
                        help="nifti masks, DICOM SEG (DICOM input; needs medseg[dicom]) or both (default nifti)")
    parser.add_argument("--label-codes", metavar="JSON",
                        help="DICOM SEG segment codes: a JSON file with a label_codes map (e.g. a dataset.json); "
                        "default: the training dataset.json's label_codes, else a generic code")
    parser.add_argument("--output", required=True, help="folder for the predicted masks")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap in [0, 1) (default 0.5)")
    parser.add_argument("--sw-batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    parser.add_argument("--tta", action="store_true", help="average the 8 mirrorings over the spatial axes")
    parser.add_argument("--no-postprocess", action="store_true", help="skip the post-processing learned by crossval")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write probabilities/<case>.nii.gz (float32, channels last, input grid)")
    parser.add_argument("--stitch-on-cpu", action="store_true",
                        help="accumulate sliding-window outputs in CPU memory (volumes too large for the GPU)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medseg.inference.dicom_cases import SERIES_CSV
    from medseg.inference.predict import predict
    from medseg.utils.rundir import POSTPROCESSING_FILE

    series = Path(args.output) / SERIES_CSV
    before = series.stat().st_mtime_ns if series.is_file() else None
    written = predict(args.model, args.input, args.output, device=args.device, amp=args.amp,
                      overlap=args.overlap, sw_batch_size=args.sw_batch_size, tta=args.tta,
                      postprocess=not args.no_postprocess, save_probabilities=args.save_probabilities,
                      stitch_on_cpu=args.stitch_on_cpu, output_format=args.output_format,
                      series_uids=args.series_uid, label_codes=args.label_codes)
    print(f"wrote {len(written)} mask(s) to {args.output}")
    if series.is_file() and series.stat().st_mtime_ns != before:
        print(f"DICOM series and what was written for each: {series}")
    applied = Path(args.output) / POSTPROCESSING_FILE
    if written and applied.is_file():
        print(f"post-processing applied: {applied}")
    return 0
