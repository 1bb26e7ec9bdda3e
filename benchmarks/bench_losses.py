"""Benchmark medseg losses against MONAI's on (2, 4, 96, 96, 96) softmax logits with label-index targets.

Run: ``.venv/bin/python benchmarks/bench_losses.py`` (``make bench``). Prints one table of
ratios ours/MONAI:

* time: forward + backward of the loss, measured in *this* process, ours and MONAI's
  interleaved, median of several repetitions after a warm-up;
* peak memory: each (case, implementation) runs once in a fresh subprocess with
  ``MALLOC_MMAP_THRESHOLD_=65536`` (large tensors are mmapped and returned on free, so RSS tracks
  live memory), after a warm-up on a small crop; the peak-RSS mark is reset (Linux
  ``/proc/self/clear_refs``) just before forward + backward and the figure is the peak RSS
  (``VmHWM``) minus the RSS at that moment (inputs, and the precomputed distance maps for the
  boundary case, already allocated).

The boundary case is one loss step with our BoundaryLoss on maps precomputed by the data
pipeline versus ``monai.losses.BoundaryLoss``, which recomputes its maps every step.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

SHAPE = (2, 4, 96, 96, 96)
CASES = ("dice", "generalized_dice", "tversky", "boundary")
TARGETS = {"dice": (1.0, 0.8), "generalized_dice": (1.0, 0.8), "tversky": (1.0, 0.8), "boundary": (1 / 20, None)}


def make_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(SHAPE, generator=g)
    labels = torch.zeros((SHAPE[0], 1, *SHAPE[2:]), dtype=torch.int64)
    # three nested boxes: classes 1..3 occupy ~12%, ~3% and ~0.4% of the volume
    labels[:, :, 20:76, 20:76, 30:66] = 1
    labels[:, :, 35:60, 35:60, 40:56] = 2
    labels[:, :, 44:52, 44:52, 44:52] = 3
    return logits, labels


def build(case: str, impl: str):
    import monai.losses as ml

    import medseg.losses as ours

    common = dict(to_onehot_y=True, softmax=True)
    if case == "dice":
        return (ours.DiceLoss if impl == "ours" else ml.DiceLoss)(**common)
    if case == "generalized_dice":
        return (ours.GeneralizedDiceLoss if impl == "ours" else ml.GeneralizedDiceLoss)(**common)
    if case == "tversky":
        return (ours.TverskyLoss if impl == "ours" else ml.TverskyLoss)(alpha=0.3, beta=0.7, **common)
    if case == "boundary":
        return (ours.BoundaryLoss if impl == "ours" else ml.BoundaryLoss)(include_background=False, **common)
    raise ValueError(f"unknown case {case!r}")


def distance_maps(labels: torch.Tensor) -> torch.Tensor:
    from medseg.transforms import signed_distance_map

    return torch.stack([torch.from_numpy(signed_distance_map(lab, SHAPE[1])) for lab in labels])


def step(loss, impl: str, logits: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor | None) -> None:
    x = logits.detach().requires_grad_(True)
    value = loss(x, labels, distance_map=dist) if (impl == "ours" and dist is not None) else loss(x, labels)
    value.backward()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_memory(case: str, impl: str) -> None:
    """Child process: one forward + backward, prints the peak RSS increase in MiB as JSON."""
    logits, labels = make_inputs()
    loss = build(case, impl)
    dist = distance_maps(labels) if (case == "boundary" and impl == "ours") else None
    # warm-up on a small crop so that library initialisation is not counted as loss memory
    small = (slice(None), slice(None), slice(0, 16), slice(0, 16), slice(0, 16))
    step(loss, impl, logits[small].contiguous(), labels[small].contiguous(),
         None if dist is None else dist[small].contiguous())
    before = _rss_bytes()
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak-RSS mark (VmHWM) to the current RSS
        f.write("5")
    step(loss, impl, logits, labels, dist)
    print(json.dumps({"peak_mib": max(_peak_rss_bytes() - before, 0) / 2**20}))


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_of(case: str, impl: str) -> float:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(
        [sys.executable, __file__, "--memory", case, impl], capture_output=True, text=True, env=env, check=True
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])


def time_case(case: str, logits: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor) -> dict[str, float]:
    losses = {impl: build(case, impl) for impl in ("ours", "monai")}
    reps = 2 if case == "boundary" else 7
    times: dict[str, list[float]] = {"ours": [], "monai": []}
    for impl in ("ours", "monai"):  # warm-up
        if case != "boundary" or impl == "ours":
            step(losses[impl], impl, logits, labels, dist if case == "boundary" else None)
    for _ in range(reps):
        for impl in ("ours", "monai"):
            t0 = time.perf_counter()
            step(losses[impl], impl, logits, labels, dist if case == "boundary" else None)
            times[impl].append(time.perf_counter() - t0)
    return {impl: statistics.median(v) * 1000 for impl, v in times.items()}


def main() -> int:
    import monai

    torch.manual_seed(0)
    logits, labels = make_inputs()
    dist = distance_maps(labels)
    print(f"medseg vs MONAI {monai.__version__} losses, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"input {SHAPE} float32 logits + (2, 1, 96, 96, 96) int64 labels, forward+backward")
    header = f"{'loss':<18}{'ours ms':>10}{'MONAI ms':>11}{'time ratio':>12}{'ours MiB':>10}{'MONAI MiB':>11}{'mem ratio':>11}  target"
    print(header)
    print("-" * len(header))
    ok = True
    for case in CASES:
        t = time_case(case, logits, labels, dist)
        m_ours, m_monai = memory_of(case, "ours"), memory_of(case, "monai")
        tr, mr = t["ours"] / t["monai"], m_ours / m_monai
        t_target, m_target = TARGETS[case]
        met = tr <= t_target and (m_target is None or mr <= m_target)
        ok &= met
        target = f"time<={t_target:.2f}" + ("" if m_target is None else f", mem<={m_target}")
        if case == "boundary":
            target += f" (>= {1 / t_target:.0f}x faster)"
        print(f"{case:<18}{t['ours']:>10.1f}{t['monai']:>11.1f}{tr:>12.3f}{m_ours:>10.1f}{m_monai:>11.1f}{mr:>11.3f}  "
              f"{target} {'MET' if met else 'NOT MET'}")
    print(f"boundary: ours uses distance maps precomputed once per case by SignedDistanceMapd "
          f"({sum(1 for _ in labels)} cases here); MONAI recomputes them with scipy EDT every step.")
    print("memory: peak RSS (VmHWM, reset just before) minus RSS before one forward+backward, fresh "
          "subprocess per cell, MALLOC_MMAP_THRESHOLD_=65536, inputs allocated beforehand.")
    print("all targets met" if ok else "some targets NOT met (see above)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--memory":
        measure_memory(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())
