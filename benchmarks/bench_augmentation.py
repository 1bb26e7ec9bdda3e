"""Time per training iteration with the planned augmentation vs the earlier light recipe, and where it goes.

Both recipes run in this process on the same synthetic demo-like CT cases, plan, store, network, loss and
optimizer, with the default data-loader workers (``medseg.training.loaders.default_workers``); only the
plan's ``augmentation.recipe`` differs (``planned`` vs ``light``). Blocks of iterations alternate between
the recipes (light, planned, light, planned, ...) so a shared machine's load falls on both alike; the
median seconds per iteration of each recipe are compared as a ratio. Then each planned transform is
timed alone on sampled boxes (probability forced to 1): milliseconds per patch when applied, and the
expected cost per patch at its planned probability.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from medseg.data.datalist import load_dataset, split_train_val
from medseg.data.synth import SynthConfig, synthesise_dataset
from medseg.losses import create_loss
from medseg.plan import plan_dataset
from medseg.plan.augmentation import augmentation_of
from medseg.plan.network import network_from_plan
from medseg.preprocessing.augment import augmentation
from medseg.training.config import TrainConfig
from medseg.training.loaders import default_workers, make_datasets, make_loaders


def _loader(data: Path, plan: Any, dataset: Any, out: Path) -> Any:
    cfg = TrainConfig(data=str(data), out=str(out), store=str(out / "store"), progress=False, device="cpu")
    train, val = split_train_val(dataset.training, fold=0, folds=5, seed=0)
    train_ds, val_ds = make_datasets(cfg, plan, dataset, train, val, None)
    return make_loaders(cfg, plan, train_ds, val_ds)[0], train_ds


def _block(it: Any, n: int, net: torch.nn.Module, loss_fn: Any, opt: Any) -> tuple[float, float]:
    """Seconds per iteration and the fraction spent waiting for data over ``n`` iterations."""
    wait, start = 0.0, time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - t0
        opt.zero_grad(set_to_none=True)
        loss_fn(net(batch["image"]), batch["label"]).backward()
        opt.step()
    total = time.perf_counter() - start
    return total / n, wait / total


def _forever(loader: Any) -> Any:
    while True:
        yield from loader


def _per_transform(plan: Any, train_ds: Any, samples: int) -> list[tuple[str, float, float]]:
    boxes = []
    transform, train_ds.transform = train_ds.transform, None
    for i in range(samples):
        boxes.extend(train_ds[i % len(train_ds.dirs)])
    train_ds.transform = transform
    aug = augmentation_of(plan)
    forced = {k: ({**v, "prob": 1.0} if isinstance(v, dict) and v.get("prob", 0) > 0 else v) for k, v in aug.items()}
    planned = augmentation(plan, ["image", "label"], ["bilinear", "nearest"])
    steps = augmentation(plan.replace(augmentation=forced), ["image", "label"], ["bilinear", "nearest"])
    rows = []
    for step, orig in zip(steps, planned, strict=True):
        data = [dict(b) for b in boxes]
        t0 = time.perf_counter()
        outs = [step(d) for d in data]
        ms = (time.perf_counter() - t0) / len(data) * 1e3
        name = type(step).__name__
        if name == "RandPatchAffined":  # resampled when rotated or scaled, else an exact crop
            p = 1 - (1 - orig.prob_rotation) * (1 - orig.prob_scale)
            boxes = outs  # later steps take patch-sized inputs
        else:
            p = float(getattr(orig, "prob", 1.0))
        rows.append((name, p, ms))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=12, help="iterations per block")
    parser.add_argument("--rounds", type=int, default=2, help="blocks per recipe")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthesise_dataset(root / "data", SynthConfig(train_cases=args.cases, test_cases=0, size=96, seed=0))
        dataset = load_dataset(root / "data")
        _, planned, _ = plan_dataset(dataset)
        plans = {"light": planned.replace(augmentation={**augmentation_of(planned), "recipe": "light"}),
                 "planned": planned}
        loaders = {k: _loader(root / "data", p, dataset, root / k) for k, p in plans.items()}
        iters = {k: _forever(loader) for k, (loader, _) in loaders.items()}
        torch.manual_seed(0)
        net = network_from_plan(planned.network, planned.in_channels, planned.out_channels)
        opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
        loss_fn = create_loss("dice_ce")
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in plans}
        for k in plans:
            _block(iters[k], 2, net, loss_fn, opt)  # warm-up: workers started, first boxes read
        for _ in range(args.rounds):
            for k in plans:
                times[k].append(_block(iters[k], args.iterations, net, loss_fn, opt))
        rows = _per_transform(planned, loaders["planned"][1], samples=4)
    print(f"training iteration, demo-like CT plan: patch {list(planned.patch_size)}, batch {planned.batch_size} x "
          f"{planned.samples_per_case} patches, {default_workers()} data worker(s), {torch.get_num_threads()} threads")
    print(f"{'recipe':<10}{'s/iteration':>13}{'data wait':>11}")
    med = {}
    for k, blocks in times.items():
        med[k] = statistics.median(b[0] for b in blocks)
        print(f"{k:<10}{med[k]:>13.3f}{statistics.median(b[1] for b in blocks):>11.1%}")
    print(f"ratio planned / light: {med['planned'] / med['light']:.2f}x")
    print("\nper transform (planned recipe; ms per patch when applied, expected = probability x ms):")
    print(f"{'transform':<32}{'prob':>6}{'ms':>9}{'expected':>10}")
    for name, p, ms in rows:
        print(f"{name:<32}{p:>6.2f}{ms:>9.1f}{p * ms:>10.1f}")
    print(f"{'total expected per patch':<32}{'':>6}{'':>9}{sum(p * ms for _, p, ms in rows):>10.1f}")


if __name__ == "__main__":
    main()
