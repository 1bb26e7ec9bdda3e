"""Train a 3D U-Net on an MSD / nnU-Net dataset with MONAI's ignite engines, tracked in MLflow.

Checkpoints (last two epochs, best), the resolved config and a per-epoch metric journal are written
to --out; params, per-epoch metrics and artifacts go to MLflow (an embedded SQLite store
./mlflow.db unless --tracking-uri or MLFLOW_TRACKING_URI says otherwise).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medseg.errors import InputError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder with dataset.json (MSD or nnU-Net v2 raw)")
    parser.add_argument("--out", required=True, help="run directory for checkpoints, config and metrics")
    parser.add_argument("--epochs", type=int, default=None, help="number of epochs (default 40)")
    parser.add_argument("--loss", default="dice_ce", help="registered loss name (see medseg.losses.LOSSES)")
    parser.add_argument("--loss-args", default="{}", metavar="JSON", help='loss keyword arguments, e.g. \'{"alpha": 0.7}\'')
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)")
    parser.add_argument("--experiment", default="medseg", help="MLflow experiment name (default medseg)")
    parser.add_argument("--run-name", default=None, help="MLflow run name")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--fold", type=int, default=0, help="validation fold of --folds (default 0)")
    parser.add_argument("--folds", type=int, default=5, help="number of cross-validation folds (default 5)")
    parser.add_argument("--lr", type=float, default=None,
                        help="AdamW learning rate (default 2e-3; 5e-4 with --init, measured by benchmarks/bench_finetune.py)")
    parser.add_argument("--val-interval", type=int, default=None,
                        help="full sliding-window validation every N epochs and at the end (default: planned: a "
                        "pseudo Dice on fixed patches every epoch, the full validation when it suggests a new best "
                        "or every epochs/10 epochs, within --val-budget, and at the end)")
    parser.add_argument("--val-budget", type=float, default=0.2, metavar="F",
                        help="planned validation: at most this fraction of the training time (default 0.2)")
    parser.add_argument("--val-patches", type=int, default=None, metavar="N",
                        help="fixed patches per validation case for the per-epoch pseudo Dice (default: a fifth of "
                        "an epoch's training patches, at least one per case)")
    plan = parser.add_argument_group("plan overrides", "planned from the dataset (medseg plan) unless given")
    plan.add_argument("--pixdim", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                      help="resampled voxel size in mm")
    plan.add_argument("--patch-size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                      help="training patch / sliding-window size in voxels")
    plan.add_argument("--batch-size", type=int, default=None, help="patches per batch")
    plan.add_argument("--samples-per-case", type=int, default=None, help="patches drawn per loaded case")
    plan.add_argument("--net", choices=("dynunet", "unet"), default=None, help="network (planned: dynunet)")
    plan.add_argument("--channels", type=int, nargs="+", default=None, help="filters per level")
    plan.add_argument("--strides", type=int, nargs="+", default=None,
                      help="isotropic stride per down-sampling level (default: per-axis strides from the plan)")
    plan.add_argument("--deep-supervision", action=argparse.BooleanOptionalAction, default=None,
                      help="deep-supervision heads (dynunet)")
    plan.add_argument("--aug", nargs="+", default=None, metavar="KEY=VALUE",
                      help="augmentation overrides by name, JSON values: noise.prob=0.3 blur.sigma=[0.5,1.5] "
                      "recipe=light (names: medseg plan DATASET, section augmentation)")
    parser.add_argument("--cache", choices=("store", "ram"), default="store",
                        help="store: pre-process once to an on-disk store and read patches (default); "
                        "ram: whole volumes cached in memory (refused if they do not fit)")
    parser.add_argument("--store", default=None, metavar="DIR",
                        help="root of the preprocessed stores (default DATA/.medseg_store)")
    parser.add_argument("--cache-rate", type=float, default=1.0, help="with --cache ram: fraction of cases cached")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="data-loader worker processes per training process (default: CPUs per process - 1)")
    parser.add_argument("--iterations-per-epoch", type=int, default=None, metavar="N",
                        help="batches per epoch (default: one pass over the training cases)")
    parser.add_argument("--nproc", type=int, default=1, help="training processes via torch.distributed: NCCL, one "
                        "GPU each, on CUDA; Gloo on CPU (default 1)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    parser.add_argument("--init", default=None, metavar="SOURCE",
                        help="start from trained weights: a medseg run directory, a MONAI bundle directory or a "
                        "checkpoint file; the network, spacing, normalisation and patch come from it (see README)")
    parser.add_argument("--freeze-encoder-epochs", type=int, default=0, metavar="N",
                        help="with --init: train only the decoder and the head for the first N epochs (default 0)")
    parser.add_argument("--no-check", action="store_true", help="skip the dataset integrity check")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from medseg.training.launch import launch
    from medseg.training.train import TrainConfig, load_run_config

    try:
        loss_args = json.loads(args.loss_args)
    except json.JSONDecodeError as exc:
        raise InputError(f"--loss-args: not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(loss_args, dict):
        raise InputError(f"--loss-args: expected a JSON object, got {args.loss_args!r}")
    if args.resume and args.init:
        raise InputError("--init starts a new run; --resume continues one with the weights in its checkpoints")
    if args.resume:
        cfg = load_run_config(args.out)
        cfg.out = args.out  # a moved or copied run resumes where it now is
        if args.epochs is not None:
            cfg.epochs = args.epochs
        cfg.device, cfg.amp, cfg.progress = args.device, args.amp, not args.no_progress
    else:
        def opt(value):  # noqa: ANN001, ANN202
            return None if value is None else tuple(value)

        cfg = TrainConfig(
            data=args.data, out=args.out, epochs=40 if args.epochs is None else args.epochs, loss=args.loss,
            loss_args=loss_args, device=args.device, amp=args.amp, tracking_uri=args.tracking_uri,
            experiment=args.experiment, run_name=args.run_name, seed=args.seed, fold=args.fold, folds=args.folds,
            lr=_learning_rate(args), val_interval=args.val_interval, cache_rate=args.cache_rate, num_workers=args.num_workers,
            cache=args.cache, store=args.store, iterations_per_epoch=args.iterations_per_epoch,
            check_data=not args.no_check, progress=not args.no_progress, pixdim=opt(args.pixdim),
            patch_size=opt(args.patch_size), batch_size=args.batch_size, samples_per_case=args.samples_per_case,
            net=args.net, channels=opt(args.channels), strides=opt(args.strides),
            deep_supervision=args.deep_supervision, init=args.init, val_budget=args.val_budget,
            val_patches=args.val_patches, augmentation=_augmentation(args.aug),
            freeze_encoder_epochs=args.freeze_encoder_epochs)
    result = launch(cfg, nproc=args.nproc, resume=args.resume)
    print(f"best validation mean Dice {result.best_metric:.4f}: {result.best_checkpoint}")
    print(f"MLflow run {result.mlflow_run_id} in {result.tracking_uri}")
    if cfg.init and not args.resume:
        _print_init(result.run_dir)
    return 0


def _augmentation(items: list[str] | None) -> dict | None:
    from medseg.plan.augmentation import parse_overrides

    return parse_overrides(items) if items else None


def _learning_rate(args: argparse.Namespace) -> float:
    from medseg.training.config import FINETUNE_LR, TrainConfig

    if args.lr is not None:
        return float(args.lr)
    return FINETUNE_LR if args.init else TrainConfig.lr


def _print_init(run_dir: Path) -> None:
    from medseg.utils.rundir import INIT_FILE

    path = run_dir / INIT_FILE
    if path.is_file():
        report = json.loads(path.read_text(encoding="utf-8"))
        labels = report["labels"]
        print(f"initialised from {report['source']['source']} (sha256 {report['source']['sha256'][:12]}): "
              f"{len(report['loaded'])} tensors loaded, {len(report['reinitialised'])} re-initialised, "
              f"{len(report['skipped'])} skipped; labels matched {sorted(labels['matched'])}, new {labels['new']}, "
              f"dropped {labels['dropped']}: {path}")
