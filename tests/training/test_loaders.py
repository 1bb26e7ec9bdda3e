"""Loader choices of a run: RAM-cache estimate and refusal, workers from the CPU count, fixed epoch length."""

from __future__ import annotations

import gc

import psutil
import pytest

from medseg.data.datalist import load_dataset
from medseg.errors import InputError
from medseg.plan.fingerprint import extract_fingerprint
from medseg.plan.planner import ComputeBudget, make_plan
from medseg.training import loaders
from medseg.training.config import TrainConfig


@pytest.fixture(scope="module")
def planned(tiny_dataset):
    dataset = load_dataset(tiny_dataset)
    plan, _ = make_plan(extract_fingerprint(dataset), dataset, ComputeBudget.for_device("cpu"), {})
    return dataset, plan


def _cache_growth(root: str) -> tuple[int, int]:
    """In a fresh process: ``(estimate, USS growth)`` while MONAI's CacheDataset fills with the cases of ``root``.

    USS (memory private to the process), not PSS: PSS also charges a share of library pages first touched
    while caching, and that share depends on how many other processes map the same libraries.
    """
    from monai.data import CacheDataset

    from medseg.preprocessing.pipeline import train_transforms

    dataset = load_dataset(root)
    plan, _ = make_plan(extract_fingerprint(dataset), dataset, ComputeBudget.for_device("cpu"), {})
    # warm-up (imports, first-call buffers), kept alive so the measured cache cannot reuse its memory
    warm = CacheDataset(dataset.training[:1], train_transforms(plan), num_workers=1, progress=False)
    files = dataset.training[1:]
    proc = psutil.Process()
    gc.collect()
    before = proc.memory_full_info().uss
    cache = CacheDataset(files, train_transforms(plan), cache_rate=1.0, num_workers=1, progress=False)
    gc.collect()
    grown = proc.memory_full_info().uss - before
    assert len(cache) == len(files) and len(warm) == 1
    return loaders.estimate_cache_bytes(plan, files, [], 1.0, distance_map=False), grown


def test_the_ram_estimate_matches_what_a_cache_dataset_takes(tmp_path):
    """Memory growth while MONAI's CacheDataset fills, within 30% of the estimate (64 x 64 x 32-voxel cases).

    Measured in a fresh process: in a long-lived test worker the allocator reuses memory freed by earlier
    tests, and the growth would read low.
    """
    import multiprocessing

    from medseg.data.synth import SynthConfig, synthesise_dataset

    synthesise_dataset(tmp_path, SynthConfig(train_cases=5, test_cases=0, size=64, seed=2))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        estimate, grown = pool.apply_async(_cache_growth, (str(tmp_path),)).get(timeout=300)
    assert 0.7 * grown <= estimate <= 1.3 * grown, (estimate, grown)


def test_a_cache_that_does_not_fit_is_refused(monkeypatch):
    class Memory:
        available = 8 * 2**30

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory())
    loaders.check_ram(6 * 2**30)  # 75% of what is available: allowed
    with pytest.raises(InputError, match=r"--cache ram: caching the cases needs about 7\.0 GiB of RAM but 8\.0 GiB "
                                         r"is available; use --cache store"):
        loaders.check_ram(7 * 2**30)


@pytest.mark.parametrize(("cpus", "world", "workers"), [(2, 1, 1), (16, 1, 8), (16, 4, 3), (1, 1, 1), (8, 2, 3)])
def test_default_workers_per_rank(monkeypatch, cpus, world, workers):
    monkeypatch.setattr(loaders, "_cpus", lambda: cpus)
    assert loaders.default_workers(world) == workers


def test_iterations_per_epoch_fix_the_epoch_length(planned, tmp_path):
    dataset, plan = planned
    train, val = dataset.training[:4], dataset.training[4:]
    cfg = TrainConfig(data=str(dataset.root), out=str(tmp_path), store=str(tmp_path / "store"), num_workers=0,
                      iterations_per_epoch=5, device="cpu", progress=False)
    for cache in ("store", "ram"):
        cfg.cache = cache
        train_ds, val_ds = loaders.make_datasets(cfg, plan, dataset, train, val, None)
        train_loader, val_loader = loaders.make_loaders(cfg, plan, train_ds, val_ds)
        assert len(train_loader) == 5 and len(val_loader) == len(val), cache
        batch = next(iter(train_loader))
        assert tuple(batch["image"].shape) == (plan.batch_size * plan.samples_per_case, 1, *plan.patch_size)
    with pytest.raises(InputError, match="--iterations-per-epoch must be >= 1"):
        TrainConfig(data="d", out="o", iterations_per_epoch=0).validate()
    with pytest.raises(InputError, match="--cache must be store or ram"):
        TrainConfig(data="d", out="o", cache="disk").validate()
