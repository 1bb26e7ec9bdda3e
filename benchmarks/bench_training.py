"""Training-loop throughput (patches/s) of the demo configuration, with and without CacheDataset.

Both variants run in this process on the same synthetic cases, transforms, network, loss and
optimizer; only the dataset class differs (MONAI ``CacheDataset`` caches every deterministic step:
load, orientation, resampling, intensity, foreground crop). One warm-up epoch is excluded from the
timing of each variant; for the cached variant the one-off caching time is reported separately.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from monai.data import CacheDataset, DataLoader, Dataset
from monai.utils import set_determinism

from medseg.bundle.params import BundleParams
from medseg.data.datalist import load_dataset
from medseg.data.synth import SynthConfig, synthesise_dataset
from medseg.losses import create_loss
from medseg.plan.network import build_network
from medseg.preprocessing.pipeline import train_transforms


def _epochs(loader: DataLoader, epochs: int, net: torch.nn.Module, loss_fn, opt) -> tuple[int, float]:  # noqa: ANN001
    patches, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(batch["image"]), batch["label"])
            loss.backward()
            opt.step()
            patches += batch["image"].shape[0]
    return patches, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    with tempfile.TemporaryDirectory() as tmp:
        synthesise_dataset(Path(tmp), SynthConfig(train_cases=args.cases, test_cases=0, size=96, seed=0))
        files = load_dataset(tmp).training
        pcfg = BundleParams().resolved_plan()  # the template bundle: 1.6x1.6x2.5 mm, 48x48x32 patches, 2 per case
        rows = {}
        for name in ("no cache (Dataset)", "CacheDataset"):
            set_determinism(0)
            net = build_network(pcfg.out_channels)
            opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
            loss_fn = create_loss("dice_ce")
            t0 = time.perf_counter()
            ds = (CacheDataset(files, train_transforms(pcfg), num_workers=2, progress=False)
                  if name == "CacheDataset" else Dataset(files, train_transforms(pcfg)))
            cache_s = time.perf_counter() - t0
            loader = DataLoader(ds, batch_size=2, shuffle=True, num_workers=0)
            _epochs(loader, 1, net, loss_fn, opt)  # warm-up
            patches, seconds = _epochs(loader, args.epochs, net, loss_fn, opt)
            rows[name] = (patches / seconds, cache_s)
    print(f"training loop, demo configuration, {args.cases} cases x {args.epochs} epochs, "
          f"{torch.get_num_threads()} threads")
    print(f"{'variant':<22}{'patches/s':>12}{'setup s':>10}")
    for name, (rate, setup) in rows.items():
        print(f"{name:<22}{rate:>12.2f}{setup:>10.2f}")
    ratio = rows["CacheDataset"][0] / rows["no cache (Dataset)"][0]
    print(f"throughput ratio cached/uncached: {ratio:.2f}x")


if __name__ == "__main__":
    main()
