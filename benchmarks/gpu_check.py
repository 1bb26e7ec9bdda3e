"""GPU check: training and inference throughput, and CPU/CUDA agreement of every loss and metric.

Runs on whatever device exists (``make gpu-check``, or ``python benchmarks/gpu_check.py`` from the
repository root after ``pip install -e .``) and prints three tables:

* training: steps/s of one training step (forward, DiceCE, backward, AdamW) of medseg's default
  residual 3D U-Net on a fixed random batch of 2 patches (96^3 on CUDA, 32^3 on the CPU), after a
  warm-up, in float32 and, on CUDA only, with autocast in bfloat16 and in float16 + GradScaler;
* inference: volumes/s of MONAI's ``SlidingWindowInferer`` (96^3 windows, overlap 0.5, Gaussian
  blending, 4 windows a batch) on a 192x192x128 volume on CUDA (64x64x48 with 32^3 windows on the CPU);
* agreement: for every loss registered in ``medseg.losses.LOSSES`` the value and the gradient with
  respect to the logits on the CPU and on CUDA (PASS when max|cpu - cuda| <= 1e-8 + 1e-4 * max|cpu|,
  TF32 off); for every metric of ``medseg.metrics`` in each convention the values from CPU and from
  CUDA inputs (tolerance 1e-9: the metrics are computed on the host); and, as a device-side
  reference, medseg's ``monai`` convention against MONAI's own metric functions run on the device
  (1e-6 for Dice/IoU and NSD, 1e-3 mm for distances).

Peak memory is ``torch.cuda.max_memory_allocated`` per measurement (CUDA only). Without CUDA the
CPU part runs, the CUDA rows are SKIP, and the script says "CUDA not found" and exits 0; it exits
1 when an agreement row fails. ``--quick`` shortens every measurement; ``--json OUT`` also writes
the tables as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.losses import LOSSES, create_loss
from medseg.metrics import CONVENTIONS, METRIC_NAMES, compute_metrics
from medseg.plan.network import build_network
from medseg.transforms import signed_distance_map

NUM_CLASSES = 3
LOSS_ATOL, LOSS_RTOL = 1e-8, 1e-4
METRIC_DEVICE_TOL = 1e-9
MONAI_TOL = {"dice": 1e-6, "iou": 1e-6, "nsd": 1e-6, "hd": 1e-3, "hd95": 1e-3, "assd": 1e-3}
# arguments a registered loss needs beyond create_loss's defaults
LOSS_ARGS: dict[str, dict[str, Any]] = {"weighted_sum": {"terms": {"dice": 1.0, "boundary_only": 0.01}}}
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and smaller inputs (a smoke test)")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the tables to this JSON file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # MONAI deprecation notices
    start = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    env = _environment(device)
    print(f"torch {env['torch']} | {env['device_name']} | python {env['python']}")
    if not cuda:
        print(f"CUDA not found (torch built with CUDA: {torch.version.cuda or 'no'}): "
              "running the CPU part only; the CUDA rows are SKIP")
    torch.backends.cudnn.benchmark = True
    training = [_train_row(device, amp, args.quick) for amp in _amp_modes(device)]
    inference = [_infer_row(device, amp, args.quick) for amp in _amp_modes(device)]
    with _strict_float32():
        agreement = _loss_rows(cuda, args.quick) + _metric_rows(device, args.quick)
    failed = [r for r in agreement if r["status"] == "FAIL"]
    report = {"environment": env, "cuda_available": cuda, "quick": args.quick,
              "tolerances": {"loss": f"max|cpu - cuda| <= {LOSS_ATOL:g} + {LOSS_RTOL:g} * max|cpu|",
                             "metric_device": METRIC_DEVICE_TOL, "metric_vs_monai": MONAI_TOL},
              "training": training, "inference": inference, "agreement": agreement,
              "passed": not failed, "seconds": round(time.perf_counter() - start, 1)}
    _print_table("training (fixed random batch of 2, DiceCE, AdamW)", training,
                 ["device", "precision", "patch", "steps_per_s", "ms_per_step", "peak_mem_mb", "final_loss"])
    _print_table("inference (SlidingWindowInferer, overlap 0.5, gaussian, sw_batch_size 4)", inference,
                 ["device", "precision", "volume", "roi", "volumes_per_s", "s_per_volume", "peak_mem_mb"])
    _print_table("agreement", agreement, ["check", "name", "cpu", "other", "max_abs_diff", "tolerance", "status"])
    print("loss value/gradient: CPU vs CUDA (gradient columns: max|grad|); metric <convention>: medseg metrics "
          "from CPU vs CUDA inputs;\nvs MONAI: medseg's 'monai' convention (CPU) vs MONAI's metric functions on the "
          "device; class 1 and 2, spacing 0.8x0.9x2 mm")
    counts = {s: sum(r["status"] == s for r in agreement) for s in ("PASS", "FAIL", "SKIP")}
    print(f"\nagreement: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP "
          f"({report['seconds']:.1f} s in all)")
    if not cuda:
        print("CUDA not found: only the CPU part ran.")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"JSON written to {args.json}")
    return 1 if failed else 0


def _environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                           "cuda_runtime": torch.version.cuda, "device": str(device), "device_name": "CPU",
                           "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gb=round(props.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version(),
                   bf16_supported=torch.cuda.is_bf16_supported(),
                   cudnn_tf32=torch.backends.cudnn.allow_tf32, matmul_tf32=torch.backends.cuda.matmul.allow_tf32)
    return env


def _amp_modes(device: torch.device) -> list[str | None]:
    if device.type != "cuda":
        return [None]
    return [None, *(["bf16"] if torch.cuda.is_bf16_supported() else []), "fp16"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def _timed(fn: Callable[[], torch.Tensor], warmup: int, runs: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """``(seconds for runs calls, last output)`` after ``warmup`` calls, synchronised, peak memory reset first."""
    for _ in range(warmup):
        fn()
    _sync(device)
    _reset_peak(device)
    t0 = time.perf_counter()
    for _ in range(runs):
        out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _train_row(device: torch.device, amp: str | None, quick: bool) -> dict[str, Any]:
    size = (96,) * 3 if device.type == "cuda" else (32,) * 3
    warmup, steps = (1, 2) if quick else ((10, 50) if device.type == "cuda" else (2, 5))
    torch.manual_seed(0)
    net = build_network(NUM_CLASSES).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = create_loss("dice_ce")
    x = torch.randn(2, 1, *size, device=device)
    y = torch.randint(0, NUM_CLASSES, (2, 1, *size), device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=AMP_DTYPES.get(amp or "", torch.float32), enabled=amp is not None):
            loss = loss_fn(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss.detach()

    seconds, loss = _timed(step, warmup, steps, device)
    return {"device": device.type, "precision": amp or "fp32", "patch": "x".join(map(str, size)), "batch": 2,
            "steps": steps, "steps_per_s": round(steps / seconds, 2), "ms_per_step": round(1000 * seconds / steps, 1),
            "peak_mem_mb": _peak_mb(device), "final_loss": round(float(loss), 4)}


def _infer_row(device: torch.device, amp: str | None, quick: bool) -> dict[str, Any]:
    from monai.inferers import SlidingWindowInferer

    if device.type == "cuda":
        volume, roi = (192, 192, 128), (96, 96, 96)
    else:
        volume, roi = ((48, 48, 32) if quick else (64, 64, 48)), (32, 32, 32)
    warmup, runs = (1, 1) if quick else ((3, 10) if device.type == "cuda" else (1, 2))
    torch.manual_seed(0)
    net = build_network(NUM_CLASSES).to(device).eval()
    inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=4, overlap=0.5, mode="gaussian")
    image = torch.randn(1, 1, *volume, device=device)

    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, dtype=AMP_DTYPES.get(amp or "", torch.float32),
                                                    enabled=amp is not None):
            return inferer(image, net)

    seconds, out = _timed(run, warmup, runs, device)
    if tuple(out.shape) != (1, NUM_CLASSES, *volume) or not bool(torch.isfinite(out).all()):
        raise RuntimeError(f"sliding-window output {tuple(out.shape)} is not finite logits of the volume's size")
    return {"device": device.type, "precision": amp or "fp32", "volume": "x".join(map(str, volume)),
            "roi": "x".join(map(str, roi)), "runs": runs, "volumes_per_s": round(runs / seconds, 3),
            "s_per_volume": round(seconds / runs, 3), "peak_mem_mb": _peak_mb(device)}


@contextmanager
def _strict_float32() -> Iterator[None]:
    """TF32 off while values are compared (it would change float32 convolutions and matmuls on Ampere+)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _labels(shape: tuple[int, ...], shift: int) -> np.ndarray:
    """Label map with two ball-shaped classes; ``shift`` moves them (prediction vs ground truth)."""
    grid = np.indices(shape).astype(np.float64)
    centre = np.array(shape, dtype=np.float64)[:, None, None, None] / 2
    lab = np.zeros(shape, dtype=np.int64)
    r1 = np.sqrt((((grid - centre) - np.array([shift, 0, 0])[:, None, None, None]) ** 2).sum(0))
    r2 = np.sqrt((((grid - centre) - np.array([0, shift + 3, 1])[:, None, None, None]) ** 2).sum(0))
    lab[r1 < shape[0] / 4] = 1
    lab[r2 < shape[0] / 8] = 2
    return lab


def _loss_inputs(quick: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    size = (16,) * 3 if quick else (32,) * 3
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, NUM_CLASSES, *size, generator=g)
    coarse = torch.randn(2, NUM_CLASSES, *(s // 2 for s in size), generator=g)
    label = torch.from_numpy(np.stack([_labels(size, 0), _labels(size, 2)]))[:, None]
    dist = torch.from_numpy(np.stack([signed_distance_map(label[b], NUM_CLASSES) for b in range(2)]))
    return logits, coarse, label, dist


def _loss_value(name: str, device: torch.device, inputs: tuple[torch.Tensor, ...]) -> tuple[float, np.ndarray]:
    logits, coarse, label, dist = (t.to(device) for t in inputs)
    loss_fn = create_loss(name, **LOSS_ARGS.get(name, {})).to(device)
    x, xc = logits.clone().requires_grad_(True), coarse.clone().requires_grad_(True)
    prediction = [x, xc] if name == "deep_supervision" else x
    kwargs = {"distance_map": dist} if getattr(loss_fn, "uses_distance_map", False) else {}
    value = loss_fn(prediction, label, **kwargs)
    value.backward()
    grads = [x.grad] + ([xc.grad] if name == "deep_supervision" else [])
    return float(value.detach().cpu()), torch.cat([g.detach().cpu().flatten() for g in grads]).double().numpy()


def _loss_rows(cuda: bool, quick: bool) -> list[dict[str, Any]]:
    inputs = _loss_inputs(quick)
    rows = []
    for name in LOSSES.names:
        try:
            cpu_value, cpu_grad = _loss_value(name, torch.device("cpu"), inputs)
            other = _loss_value(name, torch.device("cuda"), inputs) if cuda else None
        except Exception as exc:  # a loss that cannot run is a failed row, not a crashed check
            rows.append(_row("loss", name, None, None, math.inf, 0.0, "FAIL", f"{type(exc).__name__}: {exc}"))
            continue
        rows.append(_compare("loss value", name, np.array([cpu_value]), None if other is None else np.array([other[0]])))
        rows.append(_compare("loss gradient", name, cpu_grad, None if other is None else other[1]))
    return rows


def _compare(check: str, name: str, cpu: np.ndarray, other: np.ndarray | None) -> dict[str, Any]:
    scale = float(np.abs(cpu).max())
    tol = LOSS_ATOL + LOSS_RTOL * scale
    shown = float(cpu[0]) if cpu.size == 1 else scale
    if other is None:
        return _row(check, name, shown, None, None, tol, "SKIP")
    diff = float(np.abs(cpu - other).max())
    return _row(check, name, shown, float(other[0]) if other.size == 1 else float(np.abs(other).max()), diff, tol,
                "PASS" if diff <= tol and np.isfinite(cpu).all() else "FAIL")


def _row(check: str, name: str, cpu: float | None, other: float | None, diff: float | None, tol: float,
         status: str, note: str = "") -> dict[str, Any]:
    return {"check": check, "name": name, "cpu": cpu, "other": other, "max_abs_diff": diff,
            "tolerance": tol, "status": status, "note": note}


def _metric_table(pred: Any, gt: Any, spacing: tuple[float, ...], convention: str) -> dict[str, list[float]]:
    per_class = compute_metrics(pred, gt, spacing, labels=[1, 2], convention=convention)
    return {m: [float(getattr(per_class[k], m)) for k in (1, 2)] for m in METRIC_NAMES}


def _metric_rows(device: torch.device, quick: bool) -> list[dict[str, Any]]:
    shape = (24, 24, 16) if quick else (48, 44, 32)
    spacing = (0.8, 0.9, 2.0)
    gt, pred = _labels(shape, 0), _labels(shape, 2)
    pred[1, 1, 1] = 1  # a stray voxel: HD and HD95 differ
    rows = []
    for convention in CONVENTIONS:
        cpu = _metric_table(torch.from_numpy(pred), torch.from_numpy(gt), spacing, convention)
        on_device = (_metric_table(torch.from_numpy(pred).to(device), torch.from_numpy(gt).to(device), spacing,
                                   convention) if device.type == "cuda" else None)
        for metric in METRIC_NAMES:
            a = np.array(cpu[metric])
            if on_device is None:
                rows.append(_row(f"metric {convention}", metric, float(a.max()), None, None, METRIC_DEVICE_TOL, "SKIP"))
                continue
            b = np.array(on_device[metric])
            diff = float(np.abs(a - b).max())
            rows.append(_row(f"metric {convention}", metric, float(a.max()), float(b.max()), diff, METRIC_DEVICE_TOL,
                             "PASS" if diff <= METRIC_DEVICE_TOL else "FAIL"))
    ours = _metric_table(pred, gt, spacing, "monai")
    reference = _monai_metrics(pred, gt, spacing, device)
    for metric in METRIC_NAMES:
        a, b = np.array(ours[metric]), np.array(reference[metric])
        diff = float(np.abs(a - b).max())
        rows.append(_row(f"vs MONAI on {device.type}", metric, float(a.max()), float(b.max()), diff, MONAI_TOL[metric],
                         "PASS" if diff <= MONAI_TOL[metric] else "FAIL"))
    return rows


def _monai_metrics(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...],
                   device: torch.device) -> dict[str, list[float]]:
    """MONAI's metric functions on one-hot ``(1, C, *spatial)`` tensors on ``device``, classes 1 and 2."""
    from monai import metrics as mm

    def onehot(lab: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(lab).to(device)
        return torch.nn.functional.one_hot(t, NUM_CLASSES).movedim(-1, 0)[None].float()

    p, g = onehot(pred), onehot(gt)
    calls: dict[str, Callable[[], torch.Tensor]] = {
        "dice": lambda: mm.compute_dice(p, g, include_background=False),
        "iou": lambda: mm.compute_iou(p, g, include_background=False),
        "hd": lambda: mm.compute_hausdorff_distance(p, g, spacing=spacing),
        "hd95": lambda: mm.compute_hausdorff_distance(p, g, percentile=95, spacing=spacing),
        "assd": lambda: mm.compute_average_surface_distance(p, g, symmetric=True, spacing=spacing),
        "nsd": lambda: mm.compute_surface_dice(p, g, class_thresholds=[1.0, 1.0], spacing=spacing),
    }
    return {m: [float(v) for v in calls[m]().flatten().cpu()] for m in METRIC_NAMES}


def _print_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if (v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5)) else f"{v:.4g}"
        return str(v)

    table = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(t[i]) for t in table)]) for i, c in enumerate(columns)]
    print(f"\n== {title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for t, r in zip(table, rows, strict=True):
        line = "  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True))
        print(line + (f"  {r['note']}" if r.get("note") else ""))


if __name__ == "__main__":
    sys.exit(main())
