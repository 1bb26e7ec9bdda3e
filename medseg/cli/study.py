"""Compare losses: train every loss x seed with one plan and split, score the test cases, report.

Every run uses the same plan (resolved once), fold 0, augmentation and number of steps; only the
loss and the model seed change. Each run is predicted and evaluated (lesion-wise) on the dataset's
imagesTs/labelsTs, and logged as a child of one MLflow parent run. Writes OUT/study.csv (one row
per run and class), OUT/study.json and OUT/report.html (mean ± sd over seeds, paired bootstrap CIs
against --baseline, Dice by lesion size, validation curves). Running the same command again
continues a stopped study: evaluated runs are kept, a half-trained run resumes from its checkpoint.
With --markdown, writes a Markdown page (and its PNG figures) from OUT/study.json instead.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from medseg.errors import InputError

__all__ = ["add_arguments", "run"]

DEFAULT_LOSSES = "dice,generalized_dice,dice_ce,focal_tversky,boundary,boundary_dice,ce"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="dataset folder (dataset.json, imagesTr/labelsTr, imagesTs/labelsTs)")
    parser.add_argument("--out", default="study", help="study folder (default ./study)")
    parser.add_argument("--losses", default=DEFAULT_LOSSES, help=f"comma-separated losses (default {DEFAULT_LOSSES})")
    parser.add_argument("--seeds", type=int, default=3, help="model seeds per loss (default 3)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of every run (default 20)")
    parser.add_argument("--baseline", default="dice_ce", help="loss the others are compared with (default dice_ce)")
    parser.add_argument("--loss-args", default=None, metavar="JSON",
                        help='per-loss arguments, e.g. \'{"focal_tversky": {"gamma": 1.33}}\'')
    parser.add_argument("--small-lesion", type=float, default=500.0, metavar="MM3",
                        help="lesions below this volume count as small (default 500 mm^3)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default $MLFLOW_TRACKING_URI or "
                                                             "sqlite:///./mlflow.db)")
    parser.add_argument("--experiment", default="medseg-study", help="MLflow experiment (default medseg-study)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate of every run")
    parser.add_argument("--patch-size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"))
    parser.add_argument("--channels", type=int, nargs="+", default=None, help="network filters per level")
    parser.add_argument("--strides", type=int, nargs="+", default=None, help="network strides per level")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--samples-per-case", type=int, default=None)
    parser.add_argument("--num-res-units", type=int, default=None)
    parser.add_argument("--val-interval", type=int, default=None)
    parser.add_argument("--markdown", default=None, metavar="PAGE.md",
                        help="write a Markdown page from OUT/study.json (figures in PAGE's folder/PAGE-stem/)")


def _loss_args(raw: str | None) -> dict:
    if raw is None:
        return {}
    text = Path(raw).read_text(encoding="utf-8") if Path(raw).is_file() else raw
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--loss-args: not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(parsed, dict):
        raise InputError(f"--loss-args must be a JSON object {{loss: {{arg: value}}}}, got {type(parsed).__name__}")
    return parsed


def _markdown(args: argparse.Namespace) -> int:
    from medseg.study.report import STUDY_JSON, render_markdown

    source = Path(args.out) / STUDY_JSON
    if not source.is_file():
        raise InputError(f"--markdown: {source} not found (run the study first)")
    page = Path(args.markdown)
    study = json.loads(source.read_text(encoding="utf-8"))
    text = render_markdown(study, page.parent / page.stem, page.stem)
    page.write_text(text, encoding="utf-8")
    print(f"wrote {page} and its figures in {page.parent / page.stem}/")
    return 0


def run(args: argparse.Namespace) -> int:
    from medseg.study.run import StudyConfig, run_study

    if args.markdown:
        return _markdown(args)
    if not args.data:
        raise InputError("--data is required")
    overrides = {"lr": args.lr, "patch_size": tuple(args.patch_size) if args.patch_size else None,
                 "channels": tuple(args.channels) if args.channels else None,
                 "strides": tuple(args.strides) if args.strides else None, "batch_size": args.batch_size,
                 "samples_per_case": args.samples_per_case, "num_res_units": args.num_res_units,
                 "val_interval": args.val_interval}
    cfg = StudyConfig(data=args.data, out=args.out, losses=tuple(x.strip() for x in args.losses.split(",") if x.strip()),
                      seeds=args.seeds, epochs=args.epochs, baseline=args.baseline, loss_args=_loss_args(args.loss_args),
                      tracking_uri=args.tracking_uri, experiment=args.experiment, device=args.device,
                      small_lesion_mm3=args.small_lesion, command="medseg " + shlex.join(sys.argv[1:]),
                      train_overrides={k: v for k, v in overrides.items() if v is not None} | {"progress": False})
    study = run_study(cfg)
    print(f"{len(study['runs'])} runs; wrote {', '.join(study['outputs'].values())} "
          f"(wall time {study['wall_time_s'] / 60:.1f} min)")
    return 0
