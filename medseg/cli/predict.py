"""Predict segmentation masks with sliding-window inference (Gaussian blending).

Each output is a NIfTI mask with the input's exact shape, affine and orientation, integer dtype,
named like its input, written atomically into --output.
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="training run directory or checkpoint file (.pt)")
    parser.add_argument("--input", required=True, help="a NIfTI file or a folder of them")
    parser.add_argument("--output", required=True, help="folder for the predicted masks")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap in [0, 1) (default 0.5)")
    parser.add_argument("--sw-batch-size", type=int, default=4, help="windows per forward pass (default 4)")


def run(args: argparse.Namespace) -> int:
    from medseg.engine.predict import predict

    written = predict(args.model, args.input, args.output, device=args.device, amp=args.amp,
                      overlap=args.overlap, sw_batch_size=args.sw_batch_size)
    print(f"wrote {len(written)} mask(s) to {args.output}")
    return 0
