"""Export a training run to a MONAI bundle, or verify a bundle with MONAI's own checks.

  medseg bundle export RUN_DIR OUT_DIR   weights, resolved configs, metadata (+ eval metrics), TorchScript
                                         (--onnx: also ONNX, checked with ONNX Runtime)
  medseg bundle verify DIR               layout, safe configs, verify_metadata (MONAI's schema, offline),
                                         large_files.yml hashes, verify_net_in_out, ckpt_export,
                                         TorchScript == eager (1e-4); medseg's warnings (MEDSEG-Wnnn)
                                         are printed without failing the bundle
"""

from __future__ import annotations

import argparse

from medseg.errors import InputError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bundle_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True
    exp = sub.add_parser("export", help="turn a `medseg train` run directory into a MONAI bundle")
    exp.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by medseg train (--out)")
    exp.add_argument("out_dir", metavar="OUT_DIR", help="bundle folder to create")
    exp.add_argument("--report", default=None, help="summary.json (or its folder) of `medseg evaluate` for "
                     "eval_metrics (default: RUN_DIR/report or RUN_DIR/../report, else the best validation epoch)")
    exp.add_argument("--name", default=None, help="bundle name in metadata.json (default: OUT_DIR's name)")
    exp.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    exp.add_argument("--no-torchscript", action="store_true", help="skip models/model.ts")
    exp.add_argument("--onnx", action="store_true", help="also write models/model.onnx (opset 18, dynamic batch "
                     "and spatial axes), checked against eager PyTorch with ONNX Runtime; needs medseg[onnx]")
    ver = sub.add_parser("verify", help="run MONAI's bundle checks on a bundle folder")
    ver.add_argument("bundle_dir", metavar="DIR", help="bundle folder (with configs/)")
    ver.add_argument("--device", default="cpu", help="device for the network checks (default cpu)")
    ver.add_argument("--tolerance", type=float, default=1e-4, help="max |TorchScript - eager| (default 1e-4)")
    ver.add_argument("--no-export", action="store_true", help="skip ckpt_export and the TorchScript comparison")


def run(args: argparse.Namespace) -> int:
    if args.bundle_command == "export":
        from medseg.bundle.export import export_run

        out = export_run(args.run_dir, args.out_dir, report=args.report, name=args.name, overwrite=args.force,
                         torchscript=not args.no_torchscript, onnx=args.onnx)
        print(f"bundle written: {out}")
        print(f"verify it with: medseg bundle verify {out}")
        return 0
    from medseg.bundle.verify import lint_warnings, verify_bundle

    results = verify_bundle(args.bundle_dir, device=args.device, tolerance=args.tolerance, export=not args.no_export)
    width = max(len(r.name) for r in results)
    for r in results:
        print(f"{'PASS' if r.ok else 'FAIL'}  {r.name:<{width}}  {r.message}  ({r.seconds:.1f} s)")
    for w in lint_warnings(args.bundle_dir):
        print(f"WARN  {w}")
    failed = [r for r in results if not r.ok]
    if failed:
        raise InputError(f"{args.bundle_dir}: {len(failed)} of {len(results)} bundle checks failed",
                         problems=[f"{r.name}: {r.message}" for r in failed])
    print(f"{args.bundle_dir}: all {len(results)} checks passed")
    return 0
