"""The 3D CT organ/lesion bundle, rendered from typed parameters.

One source of truth for ``bundles/ct_organ_lesion`` and for every bundle that
``medseg bundle export`` makes from a training run: :func:`render_configs` turns a
:class:`BundleParams` into the bundle's config dicts (pure wiring: ``_target_`` plus scalars, no
``$`` expressions) and :func:`write_bundle` lays out a complete bundle folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medseg.bundle.params import BundleParams
from medseg.bundle.schema import MONAI_SCHEMA_URL, SCHEMA_FILE, write_schema
from medseg.utils.files import atomic_write_text
from medseg.utils.rundir import VAL_KEY_METRIC

__all__ = ["BundleParams", "render_configs", "write_bundle", "CONFIG_FILES", "loss_component"]

CONFIG_FILES = ("metadata.json", "train.json", "evaluate.json", "inference.json", "multi_gpu_train.json")


def loss_component(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """``_target_`` dict for a registered loss: its class with the engine defaults, else ``create_loss``."""
    import inspect

    from medseg.losses import ENGINE_DEFAULTS, LOSSES

    factory = LOSSES[name].value if hasattr(LOSSES[name], "value") else LOSSES[name]
    if inspect.isclass(factory):
        return {"_target_": f"medseg.losses.{factory.__name__}", **ENGINE_DEFAULTS, **args}
    return {"_target_": "medseg.losses.create_loss", "name": name, **args}


def _ref(name: str) -> str:
    return f"@{name}"


def _path(root: str, name: str) -> dict[str, str]:
    return {"_target_": "medseg.bundle.components.bundle_path", "root": _ref(root), "name": name}


def _common(p: BundleParams) -> dict[str, Any]:
    return {
        "bundle_root": ".",
        "dataset_dir": _path("bundle_root", p.dataset_dir),
        "ckpt_dir": _path("bundle_root", "models"),
        "ckpt_file": _path("ckpt_dir", "model.pt"),
        "output_dir": "eval",
        "device": {"_target_": "medseg.plan.network.resolve_device", "name": "auto"},
        "is_not_rank0": {"_target_": "medseg.bundle.components.is_not_main"},
        "num_classes": p.num_classes,
        "labels": {str(k): v for k, v in sorted(p.labels.items())},
        "patch_size": list(p.patch_size),
        **_planned(p.resolved_plan().to_dict()),
        "network": {"_target_": "medseg.bundle.components.to_device", "module": _ref("network_def"),
                    "device": _ref("device")},
    }


def _planned(plan: dict[str, Any]) -> dict[str, Any]:
    """Pre-processing and network from the bundle's plan (inline), read back by medseg."""
    return {
        "pipeline": {"_target_": "medseg.plan.planner.plan_from_dict", "raw": plan},
        "network_def": {"_target_": "medseg.plan.network.planned_network", "plan": _ref("pipeline")},
    }


def _sliding_window(overlap: float) -> dict[str, Any]:
    return {"_target_": "SlidingWindowInferer", "roi_size": _ref("patch_size"), "sw_batch_size": 4,
            "overlap": overlap, "mode": "gaussian"}


def _validate_section(p: BundleParams, part: str, handlers: list[dict[str, Any]]) -> dict[str, Any]:
    metrics = "@validate#metrics"
    return {
        "datalist": {"_target_": "medseg.bundle.components.fold_datalist", "dataset_dir": _ref("dataset_dir"),
                     "part": part, "fold": _ref("fold"), "folds": _ref("folds"), "seed": _ref("seed")},
        "preprocessing": {"_target_": "medseg.preprocessing.pipeline.val_transforms", "plan": _ref("pipeline")},
        "dataset": {"_target_": "Dataset", "data": "@validate#datalist", "transform": "@validate#preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@validate#dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": _sliding_window(0.25),
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True, "to_onehot": _ref("num_classes")},
            {"_target_": "AsDiscreted", "keys": "label", "to_onehot": _ref("num_classes")}]},
        "metrics": {"_target_": "medseg.bundle.components.validation_metrics", "num_classes": _ref("num_classes"),
                    "labels": _ref("labels"), "hd_convention": "monai"},
        "key_metric": {"_target_": "medseg.bundle.components.key_metric", "metrics": metrics,
                       "name": VAL_KEY_METRIC},
        "additional_metrics": {"_target_": "medseg.bundle.components.additional_metrics", "metrics": metrics,
                               "key": VAL_KEY_METRIC},
        "handlers": handlers,
        "evaluator": {"_target_": "SupervisedEvaluator", "device": _ref("device"),
                      "val_data_loader": "@validate#dataloader",
                      "network": {"_target_": "medseg.bundle.components.unwrap", "module": _ref("network")},
                      "inferer": "@validate#inferer", "postprocessing": "@validate#postprocessing",
                      "key_val_metric": "@validate#key_metric", "additional_metrics": "@validate#additional_metrics",
                      "val_handlers": "@validate#handlers"},
    }


def _run(engine: str) -> list[dict[str, Any]]:
    return [{"_target_": "medseg.bundle.components.run_engine", "engine": f"@{engine}"}]


def _train(p: BundleParams) -> dict[str, Any]:
    rank0 = _ref("is_not_rank0")  # handlers that write files or logs: rank 0 only
    stats = {"_target_": "StatsHandler", "_disabled_": rank0, "iteration_log": False}
    saver = {"_target_": "CheckpointSaver", "_disabled_": rank0, "save_dir": _ref("ckpt_dir"),
             "save_dict": {"model": _ref("network")}, "save_key_metric": True, "key_metric_filename": "model.pt"}
    train_stats = {"_target_": "StatsHandler", "_disabled_": rank0, "tag_name": "train_loss", "iteration_log": False,
                   "output_transform": {"_target_": "monai.handlers.from_engine", "keys": ["loss"], "first": True}}
    return {
        **_common(p),
        "fold": p.fold, "folds": p.folds, "seed": p.seed, "epochs": p.epochs, "val_interval": 1,
        "learning_rate": p.lr, "batch_size": p.batch_size,
        "loss": loss_component(p.loss, p.loss_args),
        "optimizer": {"_target_": "torch.optim.AdamW", "params": {
            "_target_": "medseg.bundle.components.parameters", "module": _ref("network")},
            "lr": _ref("learning_rate"), "weight_decay": p.weight_decay},
        "lr_scheduler": {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "optimizer": _ref("optimizer"),
                         "T_max": _ref("epochs")},
        "train": {
            "datalist": {"_target_": "medseg.bundle.components.fold_datalist", "dataset_dir": _ref("dataset_dir"),
                         "part": "training", "fold": _ref("fold"), "folds": _ref("folds"), "seed": _ref("seed")},
            "preprocessing": {"_target_": "medseg.preprocessing.pipeline.train_transforms", "plan": _ref("pipeline")},
            "dataset": {"_target_": "CacheDataset", "data": "@train#datalist", "transform": "@train#preprocessing",
                        "cache_rate": 1.0, "num_workers": 0, "progress": False},
            "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": _ref("batch_size"),
                           "shuffle": True, "num_workers": 0},
            "inferer": {"_target_": "SimpleInferer"},
            "handlers": [
                {"_target_": "LrScheduleHandler", "lr_scheduler": _ref("lr_scheduler"), "print_lr": False},
                {"_target_": "ValidationHandler", "validator": "@validate#evaluator", "epoch_level": True,
                 "interval": _ref("val_interval")},
                train_stats],
            "trainer": {"_target_": "SupervisedTrainer", "max_epochs": _ref("epochs"), "device": _ref("device"),
                        "train_data_loader": "@train#dataloader", "network": _ref("network"),
                        "loss_function": _ref("loss"), "optimizer": _ref("optimizer"), "inferer": "@train#inferer",
                        "train_handlers": "@train#handlers"},
        },
        "validate": _validate_section(p, "validation", [stats, saver]),
        "initialize": [{"_target_": "monai.utils.set_determinism", "seed": _ref("seed")}],
        "run": _run("train#trainer"),
    }


def _evaluate() -> dict[str, Any]:
    """Override of train.json: evaluate ``models/model.pt`` on the validation fold, save metrics."""
    return {
        "validate#handlers": [
            {"_target_": "CheckpointLoader", "load_path": _ref("ckpt_file"), "load_dict": {"model": _ref("network")},
             "map_location": _ref("device")},
            {"_target_": "StatsHandler", "iteration_log": False},
            {"_target_": "MetricsSaver", "save_dir": _ref("output_dir"), "metrics": "*", "summary_ops": None,
             "save_rank": 0},
        ],
        "initialize": [],
        "run": _run("validate#evaluator"),
    }


def _inference(p: BundleParams) -> dict[str, Any]:
    common = _common(p)
    return {
        **common,
        "write_dicom_seg": False,  # DICOM input (a series, a study): also write <case>.seg.dcm (needs medseg[dicom])
        "label_codes": {},  # DICOM SEG segment codes: {name: {"category": [scheme, value, meaning], "type": [...]}}
        "datalist": {"_target_": "medseg.bundle.dicom_seg.inference_datalist", "dataset_dir": _ref("dataset_dir"),
                     "part": "test"},
        "preprocessing": {"_target_": "medseg.preprocessing.pipeline.inference_transforms", "plan": _ref("pipeline")},
        "dataset": {"_target_": "Dataset", "data": _ref("datalist"), "transform": _ref("preprocessing")},
        "dataloader": {"_target_": "DataLoader", "dataset": _ref("dataset"), "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": _sliding_window(p.overlap),
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": _ref("preprocessing"), "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": _ref("output_dir"), "output_postfix": "seg",
             "output_dtype": "uint8", "resample": False, "separate_folder": False, "squeeze_end_dims": True,
             "print_log": False},
            {"_target_": "medseg.bundle.dicom_seg.SaveDicomSegd", "keys": "pred", "output_dir": _ref("output_dir"),
             "plan": _ref("pipeline"), "label_codes": _ref("label_codes"), "algorithm": p.name,
             "enabled": _ref("write_dicom_seg")}]},
        "handlers": [
            {"_target_": "CheckpointLoader", "load_path": _ref("ckpt_file"), "load_dict": {"model": _ref("network")},
             "map_location": _ref("device")},
            {"_target_": "StatsHandler", "iteration_log": False}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": _ref("device"), "val_data_loader": _ref("dataloader"),
                      "network": _ref("network"), "inferer": _ref("inferer"), "postprocessing": _ref("postprocessing"),
                      "val_handlers": _ref("handlers"), "amp": False},
        "initialize": [],
        "run": _run("evaluator"),
    }


def _multi_gpu_train() -> dict[str, Any]:
    """Override of train.json for ``torchrun --nproc_per_node N``: NCCL on GPUs, Gloo on CPU.

    Every rank trains and validates (its shard of the cases; the metrics are all-reduced), only
    rank 0 logs and saves (train.json's ``_disabled_: @is_not_rank0``); ``finalize`` waits for all
    ranks before leaving the process group.
    """
    return {
        "device": {"_target_": "medseg.bundle.components.init_distributed", "backend": "auto"},
        "network": {"_target_": "medseg.bundle.components.distributed_network", "network": _ref("network_def"),
                    "device": _ref("device")},
        "train#sampler": {"_target_": "medseg.bundle.components.distributed_sampler", "dataset": "@train#dataset",
                          "train": True},
        "train#dataloader#sampler": "@train#sampler",
        "train#dataloader#shuffle": False,
        "validate#sampler": {"_target_": "medseg.bundle.components.distributed_sampler",
                             "dataset": "@validate#dataset", "train": False},
        "validate#dataloader#sampler": "@validate#sampler",
        "finalize": [{"_target_": "medseg.bundle.components.cleanup_distributed"}],
    }


def _metadata(p: BundleParams) -> dict[str, Any]:
    import monai
    import nibabel
    import numpy
    import torch

    names = {str(k): v for k, v in sorted(p.labels.items())}
    return {
        "schema": MONAI_SCHEMA_URL,
        "version": p.version,
        "changelog": dict(p.changelog),
        "monai_version": monai.__version__.split("+")[0],
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"nibabel": nibabel.__version__, "pytorch-ignite": _version("pytorch-ignite"),
                                      "medseg": _version("medseg")},
        "name": p.name,
        "task": f"3D {p.modality} segmentation of " + " and ".join(v for k, v in sorted(p.labels.items()) if k),
        "description": p.description,
        "authors": "medseg contributors",
        "copyright": "Copyright (c) medseg contributors",
        "data_source": p.data_source,
        "data_type": "nifti",
        "image_classes": f"single channel {p.modality} volume, resampled to {list(p.pixdim)} mm (RAS) and "
                         + (f"windowed from HU {list(p.hu_window)} to [0, 1]" if p.modality.upper() == "CT"
                            else "z-score normalised"),
        "label_classes": "single channel label map: " + ", ".join(f"{k} = {v}" for k, v in names.items()),
        "pred_classes": f"{p.num_classes} channels of logits: " + ", ".join(f"{k} = {v}" for k, v in names.items()),
        "eval_metrics": dict(p.eval_metrics),
        **({"parent": dict(p.parent)} if p.parent else {}),
        "intended_use": "Research only; not for clinical use.",
        "references": ["Kerfoot et al., Left-Ventricle Quantification Using Residual U-Net, STACOM 2018 "
                       "(MONAI's residual UNet)"],
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "hounsfield" if p.modality.upper() == "CT" else "magnitude",
                "modality": p.modality, "num_channels": p.in_channels,
                "spatial_shape": list(p.patch_size), "dtype": "float32",
                "value_range": [0, 1] if p.modality.upper() == "CT" else [],
                "is_patch_data": True, "channel_def": {"0": "image"}}},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation", "num_channels": p.num_classes,
                "spatial_shape": list(p.patch_size), "dtype": "float32", "value_range": [],
                "is_patch_data": True, "channel_def": names}},
            "post_processed_outputs": {"pred": {
                "type": "image", "format": "labels", "num_channels": 1, "spatial_shape": ["*", "*", "*"],
                "dtype": "uint8", "value_range": [0, p.num_classes - 1], "is_patch_data": False,
                "channel_def": {"0": "label map (" + ", ".join(f"{k} = {v}" for k, v in names.items()) + ")"}}},
        },
    }


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "0"


def render_configs(p: BundleParams) -> dict[str, dict[str, Any]]:
    """File name -> content of every ``configs/*.json`` of the bundle."""
    return {"metadata.json": _metadata(p), "train.json": _train(p), "evaluate.json": _evaluate(),
            "inference.json": _inference(p), "multi_gpu_train.json": _multi_gpu_train()}


_LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def write_bundle(out_dir: str | Path, p: BundleParams, provenance: str = "") -> Path:
    """Write a complete bundle: configs, logging.conf, docs (model card, data licence, local schema), LICENSE,
    ``models/`` and ``large_files.yml`` (the weights already in ``models/`` with their hashes)."""
    from medseg.bundle.large_files import write_large_files
    from medseg.bundle.readme import LICENSE_TEXT, bundle_readme, data_license

    root = Path(out_dir)
    for name, content in render_configs(p).items():
        atomic_write_text(root / "configs" / name, json.dumps(content, indent=4) + "\n")
    atomic_write_text(root / "configs" / "logging.conf", _LOGGING_CONF)
    atomic_write_text(root / "docs" / "README.md", bundle_readme(p, provenance))
    atomic_write_text(root / "docs" / "data_license.txt", data_license(p))
    atomic_write_text(root / "LICENSE", LICENSE_TEXT)
    write_schema(root / SCHEMA_FILE)
    (root / "models").mkdir(parents=True, exist_ok=True)
    write_large_files(root)
    return root
