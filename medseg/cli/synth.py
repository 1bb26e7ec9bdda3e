"""Synthesise a CT-like dataset (organ + small lesions) in Medical Segmentation Decathlon layout.

Writes OUT_DIR/imagesTr, labelsTr, imagesTs, labelsTs and dataset.json. The same seed gives the
same bytes.
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="dataset folder to create")
    parser.add_argument("--train-cases", type=int, default=24, help="labelled training cases (default 24)")
    parser.add_argument("--test-cases", type=int, default=6, help="held-out cases (default 6)")
    parser.add_argument("--size", type=int, default=96, help="in-plane voxels; slices = size/2 (default 96)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.8, 0.8, 2.5), metavar=("X", "Y", "Z"),
                        help="voxel size in mm (default 0.8 0.8 2.5)")
    parser.add_argument("--lesion-radius", type=float, nargs=2, default=(4.0, 8.0), metavar=("MIN", "MAX"),
                        help="lesion radius range in mm (default 4 8)")
    parser.add_argument("--max-lesions", type=int, default=3, help="lesions per case, at most (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    from medseg.data.synth import SynthConfig, synthesise_dataset

    cfg = SynthConfig(train_cases=args.train_cases, test_cases=args.test_cases, size=args.size,
                      spacing=tuple(args.spacing), lesion_radius_mm=tuple(args.lesion_radius),
                      max_lesions=args.max_lesions, seed=args.seed)
    path = synthesise_dataset(args.out_dir, cfg)
    print(f"wrote {cfg.train_cases} training and {cfg.test_cases} test cases: {path}")
    return 0
