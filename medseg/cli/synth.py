"""Synthesise a CT- or MRI-like dataset (organ + small lesions) in MSD or nnU-Net v2 layout.

Writes OUT_DIR/imagesTr, labelsTr, imagesTs, labelsTs and dataset.json. The same seed gives the
same bytes; the options leave the default dataset unchanged. --channels N writes N contrasts (MSD:
one 4D file per case, channels last; nnU-Net: CASE_0000 .. CASE_{N-1}); with --decoy-channel all
but the last channel are pure noise. --regions writes BraTS-like region labels (1 rim, 2 core,
3 lesion; regions whole, core, lesion). --vessels adds a thin vessel tree with its own label.
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
    parser.add_argument("--modality", default="CT", help="CT (Hounsfield units) or MR (arbitrary units, zero "
                                                         "outside the body) (default CT)")
    parser.add_argument("--channels", type=int, default=1, help="input channels (contrasts) per case (default 1)")
    parser.add_argument("--decoy-channel", action="store_true",
                        help="every channel but the last is pure noise (needs --channels >= 2)")
    parser.add_argument("--layout", default="msd", help="msd (dataset.json lists, 4D files) or nnunet "
                                                        "(v2 raw, one file per channel) (default msd)")
    parser.add_argument("--regions", action="store_true",
                        help="BraTS-like region labels: 1 rim, 2 core, 3 lesion; regions whole/core/lesion")
    parser.add_argument("--vessels", action="store_true", help="add a thin vessel tree beside the organ (own label)")
    parser.add_argument("--lesions", type=int, nargs=2, default=(1, 3), metavar=("MIN", "MAX"),
                        help="lesions per case (default 1 3)")
    parser.add_argument("--lesion-radius", type=float, nargs=2, default=(4.0, 8.0), metavar=("MIN", "MAX"),
                        help="lesion radius range in mm (default 4 8)")
    parser.add_argument("--noise", type=float, default=20.0, help="noise standard deviation (HU or MR units, "
                                                                  "default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    from medseg.data.synth import SynthConfig, synthesise_dataset

    cfg = SynthConfig(train_cases=args.train_cases, test_cases=args.test_cases, size=args.size,
                      spacing=tuple(args.spacing), lesion_radius_mm=tuple(args.lesion_radius),
                      lesions=tuple(args.lesions), noise_hu=args.noise, seed=args.seed, channels=args.channels,
                      decoy_channel=args.decoy_channel, layout=args.layout.lower(), regions=args.regions,
                      vessels=args.vessels, modality=args.modality.upper())
    path = synthesise_dataset(args.out_dir, cfg)
    print(f"wrote {cfg.train_cases} training and {cfg.test_cases} test cases ({cfg.layout} layout): {path}")
    return 0
