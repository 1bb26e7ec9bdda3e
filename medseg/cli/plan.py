"""Fingerprint a dataset and derive its plan: spacing, patch, network, batch, normalisation, sampling.

The fingerprint uses nnU-Net v2's field names (spacings, shapes_after_crop,
foreground_intensity_properties_per_channel, ...) with axes x, y, z after reorientation to RAS.
`medseg train --data DATASET` computes the same plan by default; any train flag overrides its
planned value.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_arguments", "run", "plan_table"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET", help="dataset folder with dataset.json (MSD or nnU-Net v2 raw)")
    parser.add_argument("--out", default=None, help="write the fingerprint and plan as JSON here")
    parser.add_argument("--device", default="auto", help="plan for this device's budget: auto, cpu or cuda")
    parser.add_argument("--workers", type=int, default=2, help="threads reading cases (default 2)")


def plan_table(plan: dict, fingerprint: dict, sources: dict[str, str] | None = None) -> str:
    """The plan as a readable table, with the fingerprint facts it came from."""
    import numpy as np

    net = plan["network"]
    src = sources or {}
    spacings = np.asarray(fingerprint["spacings"])
    shapes = np.asarray(fingerprint["shapes_after_crop"])
    rows = [
        ("cases", str(len(spacings)), ""),
        ("median spacing (mm, x y z)", " ".join(f"{v:.3g}" for v in np.median(spacings, 0)), "fingerprint"),
        ("median shape after crop", " ".join(str(int(v)) for v in np.median(shapes, 0)), "fingerprint"),
        ("target spacing (mm)", " ".join(f"{v:.3g}" for v in plan["spacing"]), src.get("spacing", "plan")),
        ("patch size", " ".join(map(str, plan["patch_size"])), src.get("patch_size", "plan")),
        ("network", net["name"], src.get("net", "plan")),
        ("filters", " ".join(map(str, net["filters"])), src.get("filters", "plan")),
        ("strides", " ".join("x".join(map(str, s)) for s in net["strides"]), src.get("strides", "plan")),
        ("kernels", " ".join("x".join(map(str, k)) for k in net["kernels"]), "plan"),
        ("deep supervision", str(net["deep_supervision"]), src.get("deep_supervision", "plan")),
        ("batch size", str(plan["batch_size"]), src.get("batch_size", "plan")),
        ("samples per case", str(plan["samples_per_case"]), src.get("samples_per_case", "plan")),
        ("class sampling ratios", " ".join(f"{r:g}" for r in plan["class_ratios"]), "plan"),
    ]
    for c, norm in enumerate(plan["normalization"]):
        name = plan["channel_names"][str(c)]
        detail = (f"clip [{norm['lower']:.4g}, {norm['upper']:.4g}], z-score mean {norm['mean']:.4g} std {norm['std']:.4g}"
                  if norm["scheme"] == "ct" else "z-score per case inside the nonzero mask")
        rows.append((f"channel {c} ({name})", detail, "plan"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b}" + (f"   [{s}]" if s else "") for a, b, s in rows)


def run(args: argparse.Namespace) -> int:
    from medseg.data.datalist import load_dataset
    from medseg.plan.network import resolve_device
    from medseg.plan.planner import plan_dataset
    from medseg.utils.files import atomic_write_text

    dataset = load_dataset(args.dataset)
    device = resolve_device(args.device).type
    fingerprint, plan, sources = plan_dataset(dataset, device=device, workers=args.workers)
    raw = plan.to_dict()
    print(f"plan for {device} ({fingerprint['axes']})")
    print(plan_table(raw, fingerprint, sources))
    if args.out:
        atomic_write_text(args.out, json.dumps({"fingerprint": fingerprint, "plan": raw, "sources": sources},
                                               indent=1) + "\n")
        print(f"written to {args.out}")
    return 0
