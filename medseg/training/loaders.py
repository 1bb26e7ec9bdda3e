"""Training and validation data of a run: from the preprocessed store (default) or cached in RAM.

``--cache store``: every training case is pre-processed once into the store
(:mod:`medseg.preprocessing.store`, written here when missing); training reads patches
(:class:`~medseg.preprocessing.patches.PatchDataset`), validation one volume at a time. Memory for
data is bounded by workers x prefetch x batch x patch, whatever the number of cases.

``--cache ram``: MONAI ``CacheDataset`` of whole pre-processed volumes (plus each class's voxel
indices). Before filling it, :func:`estimate_cache_bytes` compares what it needs with the memory
available and refuses (exit 2) rather than being killed. Losses that take a signed distance map
(``uses_distance_map``) train this way: the map is computed on whole volumes, which the store does
not keep.

Workers: ``--num-workers`` (default :func:`default_workers`, from the CPU count per rank);
persistent workers, pinned memory on CUDA, per-worker seeds from the run's seed (MONAI's
``DataLoader``). ``--iterations-per-epoch N`` makes an epoch ``N`` batches, whatever the number of cases.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.datalist import Dataset
from medseg.errors import InputError
from medseg.plan.planner import Plan
from medseg.training import distributed as dist
from medseg.training.config import TrainConfig

__all__ = ["default_workers", "estimate_cache_bytes", "check_ram", "make_datasets", "make_loaders", "EpochView",
           "RAM_FRACTION"]

logger = logging.getLogger(__name__)

RAM_FRACTION = 0.8  # of the available memory a RAM cache may take


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(world: int = 1) -> int:
    """Data-loader workers per rank: the CPUs per rank less one for the trainer, at least 1, at most 8."""
    return max(1, min(8, _cpus() // max(world, 1) - 1))


def _voxels(entry: dict[str, Any], plan: Plan, padded: bool) -> float:
    """Voxels of a case resampled to the plan's spacing (from its header, before cropping: an upper bound);
    ``padded``: as the training pipeline caches it, padded by the read margin and to at least the read box."""
    import nibabel as nib

    from medseg.preprocessing.augment import read_size

    first = entry["image"][0] if isinstance(entry["image"], (list, tuple)) else entry["image"]
    header = nib.load(first).header
    shape, zooms = header.get_data_shape()[:3], header.get_zooms()[:3]
    sides = [n * z / s for n, z, s in zip(shape, zooms, plan.spacing, strict=True)]
    if padded:
        box = read_size(plan)
        sides = [max(n + (r - p) // 2 * 2, r) for n, r, p in zip(sides, box, plan.patch_size, strict=True)]
    return float(np.prod(sides))


def estimate_cache_bytes(plan: Plan, train: list[dict[str, Any]], val: list[dict[str, Any]], cache_rate: float,
                         distance_map: bool) -> int:
    """Bytes a RAM cache of these cases takes: per voxel, float32 channels and label, int64 class indices
    (each voxel is in one class's list), the float32 distance map per output channel if the loss needs it;
    training volumes padded as the pipeline pads them."""
    per_train = 4 * plan.in_channels + 4 + 8 + (4 * plan.out_channels if distance_map else 0)
    per_val = 4 * plan.in_channels + 4
    total = (sum(_voxels(e, plan, True) for e in train) * per_train
             + sum(_voxels(e, plan, False) for e in val) * per_val)
    return int(total * cache_rate)


def check_ram(need: int) -> None:
    """Refuse a RAM cache that would not fit in :data:`RAM_FRACTION` of the available memory."""
    import psutil

    available = psutil.virtual_memory().available
    if need > RAM_FRACTION * available:
        raise InputError(f"--cache ram: caching the cases needs about {need / 2**30:.1f} GiB of RAM but "
                         f"{available / 2**30:.1f} GiB is available; use --cache store (the default: patches "
                         "read from disk) or a lower --cache-rate")
    logger.info("RAM cache: about %.2f GiB of %.1f GiB available", need / 2**30, available / 2**30)


class EpochView:
    """``length`` items cycling over ``dataset`` (item ``i`` is ``dataset[i mod n]``): a fixed epoch length."""

    def __init__(self, dataset: Any, length: int) -> None:
        self.dataset, self.length = dataset, int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(index) % len(self.dataset)]


def _epoch_items(cfg: TrainConfig, plan: Plan, n_cases: int) -> int:
    if cfg.iterations_per_epoch is None:
        return n_cases
    return cfg.iterations_per_epoch * plan.batch_size * dist.world_size()


def _store(cfg: TrainConfig, plan: Plan, dataset: Dataset) -> Any:
    """The run's store: written (rank 0) where missing or damaged, then opened by every rank."""
    from medseg.preprocessing.store import default_root, open_store, preprocess_store, store_key

    root = cfg.store or default_root(cfg.data)
    if dist.is_main():
        store, written = preprocess_store(dataset, plan, root, workers=max(1, _cpus() // dist.world_size()),
                                          checksum=False)
        logger.info("store %s: %d case(s), %d written now", store.path, len(store.case_ids), len(written))
    if dist.world_size() > 1:
        import ignite.distributed as idist

        idist.barrier()
    return open_store(Path(root) / store_key(plan, dataset.training))


def make_datasets(cfg: TrainConfig, plan: Plan, dataset: Dataset, train_files: list[dict[str, Any]],
                  val_files: list[dict[str, Any]], distance_map_key: str | None) -> tuple[Any, Any]:
    """``(train dataset, validation dataset)`` for the run's ``cache`` mode."""
    from medseg.preprocessing.pipeline import (
        patch_transforms,
        stored_val_transforms,
        train_transforms,
        val_transforms,
    )

    cache = cfg.cache
    if cache == "store" and distance_map_key is not None:
        logger.warning("--loss %s takes signed distance maps of whole volumes, which the store does not keep: "
                       "this run caches in RAM (--cache ram)", cfg.loss)
        cache = "ram"
    length = _epoch_items(cfg, plan, len(train_files))
    if cache == "store":
        from medseg.preprocessing.patches import PatchDataset, VolumeDataset

        store = _store(cfg, plan, dataset)
        train_ds = PatchDataset(store, [e["case_id"] for e in train_files], plan, patch_transforms(plan), length)
        return train_ds, VolumeDataset(store, [e["case_id"] for e in val_files], stored_val_transforms(plan))
    from monai.data import CacheDataset
    from monai.data import Dataset as PlainDataset

    if cfg.cache_rate > 0:
        check_ram(estimate_cache_bytes(plan, train_files, val_files, cfg.cache_rate, distance_map_key is not None))

    def make(files: list[dict[str, Any]], transform: Any) -> Any:
        if cfg.cache_rate > 0:
            return CacheDataset(files, transform, cache_rate=cfg.cache_rate, num_workers=2,
                                progress=cfg.progress and dist.is_main())
        return PlainDataset(files, transform)

    train_ds = make(train_files, train_transforms(plan, distance_map_key))
    return (EpochView(train_ds, length) if length != len(train_files) else train_ds), make(val_files, val_transforms(plan))


def make_loaders(cfg: TrainConfig, plan: Plan, train_ds: Any, val_ds: Any) -> tuple[Any, Any]:
    """``(train loader, validation loader)``: workers, seeds, pinned memory; sharded across ranks."""
    import torch
    from monai.data import DataLoader

    workers = default_workers(dist.world_size()) if cfg.num_workers is None else cfg.num_workers
    pin = cfg.device != "cpu" and torch.cuda.is_available()
    train_sampler, val_sampler = dist.samplers(train_ds, val_ds)
    train_loader = DataLoader(train_ds, batch_size=plan.batch_size, shuffle=train_sampler is None,
                              sampler=train_sampler, num_workers=workers, persistent_workers=workers > 0,
                              pin_memory=pin)
    # one worker reads the next validation volume while the network runs on this one
    val_loader = DataLoader(val_ds, batch_size=1, sampler=val_sampler, num_workers=min(workers, 1), pin_memory=pin)
    logger.info("data: %s, %d worker(s), %d training item(s) per epoch", type(train_ds).__name__, workers, len(train_ds))
    return train_loader, val_loader
