"""Training data throughput and memory: the preprocessed store vs CacheDataset vs no data loading at all.

On the same synthetic CT cases, planned patch, batch, network and number of workers:

- **steps/s** (one process, the three sources alternated in rounds so a busy machine slows all alike):
  patches read from the store (``--cache store``), MONAI ``CacheDataset`` of whole volumes
  (``--cache ram``), and synthetic tensors already on the device (the network's own ceiling);
- **peak memory**: PSS summed over the training process and its data-loader workers (sampled every
  50 ms), one fresh process per source and case count (default 8, 32 and 128 cases), with the
  RAM-cache estimate ``medseg train --cache ram`` checks against the available memory;
- **store format** (``--formats``): time to read one patch-sized box from blosc2 and zarr arrays of
  the same volume and codec, and their size (needs ``pip install zarr``).

Figures are ratios measured in one run; run it with ``nice`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from medseg.data.datalist import load_dataset
from medseg.data.synth import SynthConfig, synthesise_dataset
from medseg.plan.fingerprint import extract_fingerprint
from medseg.plan.network import network_from_plan
from medseg.plan.planner import ComputeBudget, make_plan
from medseg.training.config import TrainConfig
from medseg.training.loaders import estimate_cache_bytes, make_datasets, make_loaders


class PeakPSS:
    """Peak PSS (bytes) of this process plus its children, sampled in a thread."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self.proc, self.interval, self.peak, self._stop = psutil.Process(), interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except Exception:  # noqa: BLE001 - a worker that just exited
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self) -> PeakPSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _setup(data: Path, cases: int, mode: str, workers: int, steps: int):  # noqa: ANN202
    dataset = load_dataset(data)
    plan, _ = make_plan(extract_fingerprint(dataset), dataset, ComputeBudget.for_device("cpu"), {})
    train = dataset.training[:cases]
    cfg = TrainConfig(data=str(data), out=str(data / "unused"), cache=mode, num_workers=workers,
                      iterations_per_epoch=steps, progress=False, device="cpu")
    train_ds, val_ds = make_datasets(cfg, plan, dataset, train, [], None)
    loader, _ = make_loaders(cfg, plan, train_ds, val_ds)
    return plan, loader, train


def _step_fn(plan):  # noqa: ANN001, ANN202
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    net = network_from_plan(plan.network, plan.in_channels, plan.out_channels)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def step(image: torch.Tensor, label: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(net(image), label).backward()
        opt.step()

    return step


def _timed(batches, step, n: int) -> float:  # noqa: ANN001
    """Steps/s over ``n`` steps drawn from the iterator ``batches``."""
    start = time.perf_counter()
    for _ in range(n):
        batch = next(batches)
        step(batch["image"], batch["label"])
    return n / (time.perf_counter() - start)


def child_memory(data: Path, cases: int, mode: str, workers: int, steps: int) -> dict:
    """In a fresh process: build the loader for ``cases`` cases, train ``steps`` steps; peak PSS and steps/s."""
    with PeakPSS() as pss:
        plan, loader, train = _setup(data, cases, mode, workers, steps)
        step = _step_fn(plan)
        rate = _timed(iter(loader), step, steps)
    estimate = estimate_cache_bytes(plan, train, [], 1.0, False) if mode == "ram" else 0
    return {"mode": mode, "cases": cases, "peak_pss_mb": pss.peak / 2**20, "steps_per_s": rate,
            "ram_estimate_mb": estimate / 2**20}


def child_speed(data: Path, cases: int, workers: int, steps: int, rounds: int) -> dict:
    """Store, CacheDataset and synthetic tensors alternated in one process; median steps/s of each."""
    plan, store_loader, _ = _setup(data, cases, "store", workers, steps * (rounds + 1))
    _, ram_loader, _ = _setup(data, cases, "ram", workers, steps * (rounds + 1))
    step = _step_fn(plan)
    first = next(iter(store_loader))
    synthetic = iter(lambda: {"image": torch.randn_like(first["image"]), "label": first["label"].clone()}, None)
    fixed = next(synthetic)
    sources = {"store": iter(store_loader), "cache": iter(ram_loader), "synthetic": iter(lambda: fixed, None)}
    for batches in sources.values():  # warm-up: workers started, caches filled, first steps out of the timing
        _timed(batches, step, 2)
    rates: dict[str, list[float]] = {k: [] for k in sources}
    for _ in range(rounds):
        for name, batches in sources.items():
            rates[name].append(_timed(batches, step, steps))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    return {"cases": cases, "workers": workers, "batch": list(first["image"].shape), "steps_per_s": med,
            "store_vs_cache": med["store"] / med["cache"], "store_vs_synthetic": med["store"] / med["synthetic"]}


def formats(size: int = 192) -> list[dict]:
    """blosc2 vs zarr (same ZSTD level and shuffle): bytes and ms per 64x64x32 box read, one volume."""
    import shutil

    import blosc2
    import zarr
    from scipy import ndimage

    rng = np.random.default_rng(0)
    vol = ndimage.gaussian_filter(rng.normal(size=(size, size, size // 2)), 2).astype(np.float32)[None]
    vol = (vol - vol.mean()) / vol.std()
    starts = [tuple(rng.integers(0, s - b) for s, b in zip(vol.shape[1:], (64, 64, 32), strict=True)) for _ in range(200)]
    boxes = [(slice(None), *(slice(a, a + b) for a, b in zip(s, (64, 64, 32), strict=True))) for s in starts]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        b2 = blosc2.asarray(vol, urlpath=f"{tmp}/a.b2nd", mode="w", chunks=(1, 64, 64, 32),
                            cparams={"codec": blosc2.Codec.ZSTD, "clevel": 5, "filters": [blosc2.Filter.SHUFFLE]})
        z = zarr.create_array(f"{tmp}/a.zarr", shape=vol.shape, chunks=(1, 64, 64, 32), dtype=vol.dtype,
                              compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="shuffle"))
        z[...] = vol
        b2 = blosc2.open(f"{tmp}/a.b2nd", mode="r", mmap_mode="r")
        z = zarr.open_array(f"{tmp}/a.zarr", mode="r")
        for name, arr, nbytes in (("blosc2", b2, Path(f"{tmp}/a.b2nd").stat().st_size),
                                  ("zarr", z, sum(f.stat().st_size for f in Path(f"{tmp}/a.zarr").rglob("*") if f.is_file()))):
            start = time.perf_counter()
            for box in boxes:
                np.asarray(arr[box])
            out.append({"format": name, "ms_per_box": (time.perf_counter() - start) / len(boxes) * 1e3,
                        "size_vs_raw": nbytes / vol.nbytes})
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _child(argv: list[str]) -> dict:
    result = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"child {argv} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _report(speed: dict, memory: list[dict], cases: list[int]) -> None:
    s = speed["steps_per_s"]
    print(f"steps/s with {speed['workers']} worker(s), {speed['cases']} cases, batch {speed['batch']}: "
          f"store {s['store']:.2f}, CacheDataset {s['cache']:.2f}, synthetic {s['synthetic']:.2f}")
    print(f"  store / CacheDataset = {speed['store_vs_cache']:.2f}x; store / no data loading = "
          f"{speed['store_vs_synthetic']:.2f}x")
    print("peak PSS (training process + workers), MB:")
    by = {(m["mode"], m["cases"]): m for m in memory}
    for mode in ("store", "ram"):
        row = [by[(mode, n)]["peak_pss_mb"] for n in cases]
        growth = ", ".join(f"{cases[i + 1]}/{cases[i]} cases {row[i + 1] / row[i]:.2f}x" for i in range(len(cases) - 1))
        extra = ("; RAM-cache estimate " + ", ".join(f"{by[(mode, n)]['ram_estimate_mb']:.0f}" for n in cases)
                 if mode == "ram" else "")
        print(f"  {mode:<5} " + "  ".join(f"{n} cases {v:.0f}" for n, v in zip(cases, row, strict=True)) +
              f"   ({growth}){extra}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--cases", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--size", type=int, default=64, help="in-plane voxels of the synthetic cases (slices: size/2)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--formats", action="store_true", help="also compare blosc2 and zarr box reads")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:  # internal: one measurement in this fresh process, JSON on stdout
        kind, data, n = args.child[0], Path(args.child[1]), int(args.child[2])
        out = (child_speed(data, n, args.workers, args.steps, args.rounds) if kind == "speed"
               else child_memory(data, n, kind, args.workers, args.steps))
        print(json.dumps(out))
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        synthesise_dataset(data, SynthConfig(train_cases=max(args.cases), test_cases=0, size=args.size, seed=0))
        common = ["--workers", str(args.workers), "--steps", str(args.steps), "--rounds", str(args.rounds)]
        # the store is written once (as `medseg train` does on first use), outside every measurement
        _child(["--child", "store", str(data), str(max(args.cases)), *common])
        speed = _child(["--child", "speed", str(data), str(args.cases[len(args.cases) // 2]), *common])
        memory = [_child(["--child", mode, str(data), str(n), *common]) for mode in ("store", "ram") for n in args.cases]
    _report(speed, memory, args.cases)
    result = {"speed": speed, "memory": memory}
    if args.formats:
        result["formats"] = formats()
        for row in result["formats"]:
            print(f"{row['format']:<7} {row['ms_per_box']:.2f} ms per 64x64x32 box, {row['size_vs_raw']:.2f} of raw size")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
