"""Train a 3D U-Net on an MSD / nnU-Net dataset with MONAI's ignite engines, tracked in MLflow.

Checkpoints (last two epochs, best), the resolved config and a per-epoch metric journal are written
to --out; params, per-epoch metrics and artifacts go to MLflow (an embedded SQLite store
./mlflow.db unless --tracking-uri or MLFLOW_TRACKING_URI says otherwise).
"""

from __future__ import annotations

import argparse
import json

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
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default 2e-3)")
    parser.add_argument("--val-interval", type=int, default=1, help="validate every N epochs (default 1)")
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
    parser.add_argument("--cache-rate", type=float, default=1.0, help="fraction of cases cached in memory")
    parser.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--nproc", type=int, default=1, help="training processes via torch.distributed: NCCL, one "
                        "GPU each, on CUDA; Gloo on CPU (default 1)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
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
            lr=args.lr, val_interval=args.val_interval, cache_rate=args.cache_rate, num_workers=args.num_workers,
            check_data=not args.no_check, progress=not args.no_progress, pixdim=opt(args.pixdim),
            patch_size=opt(args.patch_size), batch_size=args.batch_size, samples_per_case=args.samples_per_case,
            net=args.net, channels=opt(args.channels), strides=opt(args.strides),
            deep_supervision=args.deep_supervision)
    result = launch(cfg, nproc=args.nproc, resume=args.resume)
    print(f"best validation mean Dice {result.best_metric:.4f}: {result.best_checkpoint}")
    print(f"MLflow run {result.mlflow_run_id} in {result.tracking_uri}")
    return 0
