"""`medseg predict` and `medseg evaluate` on a real-size CT: peak memory and time on the CPU.

A 512 x 512 x 400 CT (0.8 x 0.8 x 2.5 mm; the GPU plan keeps such a volume at full resolution) is
segmented by a small run trained here at that spacing (the network's size does not change the
memory of the volume-sized arrays), then evaluated with several workers against a label map of the
same size. Each command runs as its own process; its peak memory is the PSS summed over it and its
children, sampled every 100 ms. Memory is reported against the float32 volume times the number of
output classes, the size of one probability map.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def _run(cmd: list[str]) -> tuple[float, int]:
    """(seconds, peak PSS bytes over the process tree) of a command."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                total += p.memory_full_info().pss
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.1)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return time.perf_counter() - start, peak


def _volume(path: Path, label_path: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
    """A CT-like int16 volume (body, organ, noise) and its label map (uint8), written uncompressed."""
    rng = np.random.default_rng(0)
    x, y, z = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    body = (x[:, None, None] ** 2 + y[None, :, None] ** 2 / 0.7 < 0.8) & (np.abs(z)[None, None, :] < 0.95)
    organ = ((x[:, None, None] - 0.2) ** 2 / 0.1 + y[None, :, None] ** 2 / 0.06 + z[None, None, :] ** 2 / 0.4) < 1
    image = np.where(body, 40, -1000).astype(np.int16)
    image[organ] = 120
    image += rng.normal(0, 15, size=shape).astype(np.int16)
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(image, affine), path)
    nib.save(nib.Nifti1Image((organ & body).astype(np.uint8), affine), label_path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[512, 512, 400])
    p.add_argument("--workers", type=int, default=2, help="medseg evaluate --workers")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    spacing = (0.8, 0.8, 2.5)
    medseg = [sys.executable, "-m", "medseg.cli.main"]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        subprocess.run([*medseg, "synth", str(t / "small"), "--train-cases", "6", "--test-cases", "0", "--size", "32"],
                       check=True, capture_output=True)
        subprocess.run([*medseg, "train", "--data", str(t / "small"), "--out", str(t / "run"), "--epochs", "1",
                        "--pixdim", *map(str, spacing), "--patch-size", "64", "64", "16", "--channels", "8", "16",
                        "32", "--strides", "2", "2", "--net", "unet", "--no-progress", "--no-check", "--device", "cpu",
                        "--tracking-uri", f"sqlite:///{t / 'mlflow.db'}"], check=True, capture_output=True)
        (t / "in").mkdir()
        (t / "gt").mkdir()
        shape = tuple(args.shape)
        _volume(t / "in" / "ct.nii", t / "gt" / "ct.nii", shape, spacing)
        classes = 3  # background, organ, lesion
        volume_bytes = 4 * int(np.prod(shape)) * classes
        pred_s, pred_peak = _run([*medseg, "predict", "--model", str(t / "run"), "--input", str(t / "in"),
                                  "--output", str(t / "pred"), "--device", "cpu"])
        for k in (1, 2):  # several cases so the workers share them: copies of the one prediction
            (t / "pred" / f"ct{k}.nii.gz").write_bytes((t / "pred" / "ct.nii.gz").read_bytes())
            (t / "gt" / f"ct{k}.nii").write_bytes((t / "gt" / "ct.nii").read_bytes())
        eval_s, eval_peak = _run([*medseg, "evaluate", str(t / "pred"), str(t / "gt"), "--out", str(t / "report"),
                                  "--workers", str(args.workers)])
    result = {"shape": list(shape), "classes": classes, "float32_volume_x_classes_mb": volume_bytes / 2**20,
              "predict_s": pred_s, "predict_peak_pss_mb": pred_peak / 2**20,
              "predict_peak_vs_volume_x_classes": pred_peak / volume_bytes,
              "evaluate_cases": 3, "evaluate_workers": args.workers, "evaluate_s": eval_s,
              "evaluate_peak_pss_mb": eval_peak / 2**20}
    print(f"predict {shape} on CPU: {pred_s:.0f} s, peak PSS {pred_peak / 2**20:.0f} MB = "
          f"{pred_peak / volume_bytes:.2f}x the float32 volume x {classes} classes ({volume_bytes / 2**20:.0f} MB)")
    print(f"evaluate 3 cases of that size, {args.workers} workers: {eval_s:.0f} s, peak PSS {eval_peak / 2**20:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
