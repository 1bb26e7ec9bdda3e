"""Evaluation summary statistics and the self-contained HTML report (plots embedded as base64 PNG).

With lesion-wise results the report adds the detection table per structure, a plot of the
detection rate (recall) by lesion size and the per-lesion table (``lesions.csv``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.metrics import METRIC_NAMES, SITUATIONS

__all__ = ["OverlaySpec", "summarise", "worst_cases", "render_report", "lesion_rows"]

MAX_LESION_ROWS = 500  # per-lesion rows shown in the page; lesions.csv holds them all


@dataclass(frozen=True)
class OverlaySpec:
    """One worst-case overlay: a case and structure to draw, with the files to read.

    ``values``: label values of the structure (a region); ``None`` means ``(label,)``.
    """

    case: str
    label: int
    name: str
    gt_path: Path
    pred_path: Path
    image_path: Path | None
    values: tuple[int, ...] | None = None


def summarise(rows: Sequence[dict[str, Any]], labels: Sequence[int], names: dict[int, str],
              n_worst: int = 3) -> dict[str, Any]:
    """Per-class statistics (mean, std, median, p5, p95, n) of every metric, empty-situation counts, worst cases.

    Worst cases: lowest Dice first, ties broken by the largest HD95. NaN values (only when the
    caller opted into NaN for one-empty distances) are left out of the statistics and counted in ``n_nan``.
    """
    classes: dict[str, Any] = {}
    for k in labels:
        mine = [r for r in rows if r["label"] == k]
        stats = {m: _stats([r[m] for r in mine]) for m in METRIC_NAMES}
        counts = {s: sum(r["situation"] == s for r in mine) for s in SITUATIONS}
        ranked = sorted(mine, key=lambda r: (r["dice"], -_finite(r["hd95"])))
        worst = [{"case": r["case"], "situation": r["situation"], "dice": _json_float(r["dice"]),
                  "hd95": _json_float(r["hd95"])} for r in ranked[:n_worst]]
        classes[str(k)] = {"label": k, "name": names.get(k, f"label_{k}"), "metrics": stats,
                           "empty_counts": counts, "worst_cases": worst}
    mean_fg = {}
    for m in METRIC_NAMES:
        means = [c["metrics"][m]["mean"] for c in classes.values() if c["metrics"][m]["mean"] is not None]
        mean_fg[m] = float(np.mean(means)) if means else None
    return {"classes": classes, "mean_foreground": mean_fg}


def worst_cases(summary: dict[str, Any]) -> list[tuple[int, str]]:
    """``(label, case)`` pairs to draw: each class's worst cases, skipping perfect both-empty ones."""
    out = []
    for entry in summary["classes"].values():
        for w in entry["worst_cases"]:
            if w["situation"] != "both_empty":
                out.append((entry["label"], w["case"]))
    return out


def lesion_rows(results: Sequence[dict[str, Any]], keys: Sequence[int], names: dict[int, str]) -> list[dict[str, Any]]:
    """One row per lesion (``lesions.csv``): case, structure, status (TP/FN/FP), ids, volumes in mm^3, IoU, Dice, HD95."""
    rows = []
    for res in results:
        for k in keys:
            found = res["lesions"].get(k)
            for les in found.lesions if found is not None else ():
                rows.append({"case": res["case"], "label": k, "name": names.get(k, f"label_{k}"),
                             "status": les.status, "ref_lesion": les.ref_id, "pred_lesion": les.pred_id,
                             "volume_mm3": les.volume_mm3, "ref_volume_mm3": les.ref_volume_mm3,
                             "pred_volume_mm3": les.pred_volume_mm3, "iou": les.iou, "dice": les.dice,
                             "hd95": les.hd95})
    return rows


def _postprocessing_line(decision: dict[str, Any] | None) -> str:
    """What ``medseg predict`` applied to these predictions (its ``postprocessing.json``), if anything."""
    if not decision:
        return "<p>Post-processing: none recorded with these predictions.</p>"
    rules = decision.get("structures") or {}
    applied = "; ".join(f"structure {html.escape(str(k))}: {html.escape(json.dumps(r))}" for k, r in rules.items())
    return f"<p>Post-processing applied by <code>medseg predict</code>: {applied or 'none adopted'}.</p>"


def render_report(summary: dict[str, Any], rows: Sequence[dict[str, Any]], overlays: Sequence[OverlaySpec],
                  lesion_table: Sequence[dict[str, Any]] = ()) -> str:
    """The complete HTML page: summary table, Dice/HD95 box+strip plots, lesion-wise section, per-case table, overlays.

    Self-contained: inline CSS, images as ``data:image/png;base64`` URIs, no script, no network.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    parts = [_HEAD, "<h1>Segmentation evaluation</h1>",
             f"<p>{summary['n_cases']} cases &middot; predictions <code>{html.escape(summary['pred_dir'])}</code> "
             f"vs ground truth <code>{html.escape(summary['gt_dir'])}</code> &middot; HD convention "
             f"<b>{html.escape(summary['hd_convention'])}</b> (percentile {summary['hd_percentile']}) &middot; "
             f"NSD tolerance {summary['nsd_tolerance_mm']} mm &middot; distances in mm; worst-case distance for a "
             f"missed or spurious structure: {html.escape(str(summary['worst_distance_mm']))}</p>",
             _postprocessing_line(summary.get("postprocessing")),
             "<h2>Summary per class</h2>", _summary_table(summary),
             "<h2>Distributions</h2>"]
    for metric in ("dice", "hd95"):
        parts.append(f'<img class="plot" alt="{metric} per class" src="{_plot_distribution(rows, summary, metric)}">')
    if overlays:
        parts.append("<h2>Worst cases</h2><p>Ground truth in green, prediction in red, on the slice with the "
                     "largest disagreement.</p><div class='overlays'>")
        for spec in overlays:
            parts.append(f"<figure><img alt='overlay {html.escape(spec.case)}' src='{_overlay_png(spec)}'>"
                         f"<figcaption>{html.escape(spec.case)} &middot; {html.escape(spec.name)}</figcaption></figure>")
        parts.append("</div>")
    if summary.get("lesions"):
        parts += _lesion_section(summary, lesion_table)
    parts += ["<h2>Per case</h2>", _case_table(rows), "</body></html>"]
    return "\n".join(parts)


_HEAD = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>medseg evaluation report</title>
<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#eee}td.l{text-align:left}
img.plot{max-width:48%;margin:4px}.overlays{display:flex;flex-wrap:wrap}figure{margin:6px}
figure img{width:260px}tr.bad{background:#fde2e2}</style></head><body>"""


def _summary_table(summary: dict[str, Any]) -> str:
    head = "".join(f"<th>{m}</th>" for m in METRIC_NAMES) + "".join(f"<th>{s}</th>" for s in SITUATIONS)
    body = []
    for entry in summary["classes"].values():
        cells = []
        for m in METRIC_NAMES:
            s = entry["metrics"][m]
            cells.append("<td>–</td>" if s["mean"] is None else
                         f"<td>{s['mean']:.4g} &plusmn; {s['std']:.3g}<br><small>median {s['median']:.4g} "
                         f"[p5 {s['p5']:.3g}, p95 {s['p95']:.3g}]</small></td>")
        cells += [f"<td>{entry['empty_counts'][s]}</td>" for s in SITUATIONS]
        body.append(f"<tr><td class='l'>{entry['label']} {html.escape(entry['name'])}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>class</th>{head}</tr>{''.join(body)}</table>"


def _case_table(rows: Sequence[dict[str, Any]]) -> str:
    cols = ["case", "name", "situation", *METRIC_NAMES, "gt_voxels", "pred_voxels"]
    out = ["<table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"]
    for r in rows:
        cls = " class='bad'" if r["situation"] in ("gt_empty", "pred_empty") else ""
        cells = "".join(f"<td class='l'>{html.escape(str(r[c]))}</td>" if c in ("case", "name", "situation")
                        else f"<td>{_fmt(r[c])}</td>" for c in cols)
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


def _plot_distribution(rows: Sequence[dict[str, Any]], summary: dict[str, Any], metric: str) -> str:
    import matplotlib.pyplot as plt

    entries = list(summary["classes"].values())
    data = [[r[metric] for r in rows if r["label"] == e["label"] and _is_finite(r[metric])] for e in entries]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(entries) + 2), 3.6), dpi=90)
    try:
        ax.boxplot([d if d else [np.nan] for d in data], showfliers=False)
        rng = np.random.default_rng(0)
        for i, values in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=12, alpha=0.7, color="tab:blue")
        ax.set_xticks(range(1, len(entries) + 1), [e["name"] for e in entries], rotation=20)
        ax.set_ylabel(f"{metric} (mm)" if metric != "dice" else "Dice")
        ax.set_title(f"{metric} per class (one dot per case)")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return _png_uri(fig)
    finally:
        plt.close(fig)


def _overlay_png(spec: OverlaySpec) -> str:
    import matplotlib.pyplot as plt
    import nibabel as nib

    def ras(path: Any) -> np.ndarray:  # every case drawn in the same (RAS) orientation, axial slices
        arr = np.asanyarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)
        return arr.reshape(arr.shape[:3])

    values = spec.values or (spec.label,)
    gt = np.isin(ras(spec.gt_path), values)
    pred = np.isin(ras(spec.pred_path), values)
    image = None
    if spec.image_path is not None:
        image = ras(spec.image_path).astype(np.float32)
        image = image if image.shape == gt.shape else None
    axis_sums = (gt ^ pred).sum(axis=(0, 1))
    if not axis_sums.any():
        axis_sums = (gt | pred).sum(axis=(0, 1))
    z = int(np.argmax(axis_sums))
    fig, ax = plt.subplots(figsize=(3.2, 3.2), dpi=80)
    try:
        if image is not None:
            lo, hi = np.percentile(image[..., z], (1, 99))
            ax.imshow(image[..., z].T, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, origin="lower")
        else:
            ax.imshow(np.zeros(gt.shape[:2]).T, cmap="gray", origin="lower")
        for mask, color in ((gt[..., z], "lime"), (pred[..., z], "red")):
            if mask.any() and not mask.all():
                ax.contour(mask.T.astype(float), levels=[0.5], colors=color, linewidths=1.2, origin="lower")
        ax.set_title(f"{spec.case} {spec.name} z={z}", fontsize=8)
        ax.axis("off")
        fig.tight_layout()
        return _png_uri(fig)
    finally:
        plt.close(fig)


def _lesion_section(summary: dict[str, Any], table: Sequence[dict[str, Any]]) -> list[str]:
    settings = summary.get("lesion_settings", {})
    parts = ["<h2>Lesion-wise detection</h2>",
             f"<p>A lesion is a connected component ({html.escape(str(settings.get('connectivity', '')))}); "
             f"lesions are matched {html.escape(str(settings.get('matching', '')))}. Lesion Dice / HD95 follow "
             f"BraTS 2023: the mean over lesions per case with a missed or spurious lesion counted as Dice 0 and "
             f"HD95 {settings.get('worst_distance_mm')} mm, then the mean over cases.</p>"]
    entries = list(summary["lesions"].values())
    bins = [b["bin"] for b in entries[0]["recall_by_size"]] if entries else []
    head = ("<tr><th>structure</th><th>TP</th><th>FP</th><th>FN</th><th>precision</th><th>recall</th><th>F1</th>"
            "<th>lesion Dice</th><th>lesion HD95 (mm)</th>"
            + "".join(f"<th>recall {html.escape(b)} mm&sup3;</th>" for b in bins) + "</tr>")
    body = []
    for e in entries:
        by_size = "".join(f"<td>{_fmt(b['recall'])}<br><small>{b['detected']}/{b['lesions']}</small></td>"
                          for b in e["recall_by_size"])
        body.append(f"<tr><td class='l'>{e['label']} {html.escape(e['name'])}</td><td>{e['tp']}</td><td>{e['fp']}</td>"
                    f"<td>{e['fn']}</td><td>{_fmt(e['precision'])}</td><td>{_fmt(e['recall'])}</td>"
                    f"<td>{_fmt(e['f1'])}</td><td>{_fmt(e['lesion_dice'])}</td><td>{_fmt(e['lesion_hd95'])}</td>"
                    f"{by_size}</tr>")
    parts.append(f"<table>{head}{''.join(body)}</table>")
    parts.append(f'<img class="plot" alt="detection rate by lesion size" src="{_plot_detection_by_size(entries)}">')
    cols = ["case", "name", "status", "ref_lesion", "pred_lesion", "volume_mm3", "iou", "dice", "hd95"]
    shown = list(table[:MAX_LESION_ROWS])
    note = f" (first {len(shown)} of {len(table)}; all in lesions.csv)" if len(table) > len(shown) else ""
    parts.append(f"<h3>Per lesion{note}</h3><table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>")
    for r in shown:
        cls = " class='bad'" if r["status"] != "TP" else ""
        cells = "".join(f"<td class='l'>{html.escape(str(r[c]))}</td>" if c in ("case", "name", "status")
                        else f"<td>{_fmt(r[c])}</td>" for c in cols)
        parts.append(f"<tr{cls}>{cells}</tr>")
    parts.append("</table>")
    return parts


def _plot_detection_by_size(entries: Sequence[dict[str, Any]]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.6), dpi=90)
    try:
        bins = [b["bin"] for b in entries[0]["recall_by_size"]] if entries else []
        width = 0.8 / max(len(entries), 1)
        for i, e in enumerate(entries):
            recall = [np.nan if b["recall"] is None else b["recall"] for b in e["recall_by_size"]]
            x = np.arange(len(bins)) + (i - (len(entries) - 1) / 2) * width
            ax.bar(x, recall, width=width, label=e["name"])
            for xi, b in zip(x, e["recall_by_size"], strict=True):
                ax.annotate(f"n={b['lesions']}", (xi, 0.02), ha="center", fontsize=7, rotation=90)
        ax.set_xticks(range(len(bins)), [f"{b} mm³" for b in bins], rotation=15)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("detection rate (recall)")
        ax.set_title("Detection rate by reference lesion size")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return _png_uri(fig)
    finally:
        plt.close(fig)


def _png_uri(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _stats(values: Sequence[Any]) -> dict[str, Any]:
    finite = np.asarray([v for v in values if _is_finite(v)], dtype=np.float64)
    n_nan = sum(1 for v in values if v is not None and not _is_finite(v))
    if finite.size == 0:
        return {"mean": None, "std": None, "median": None, "p5": None, "p95": None, "n": 0, "n_nan": n_nan}
    p5, median, p95 = np.percentile(finite, (5, 50, 95))
    return {"mean": float(finite.mean()), "std": float(finite.std()), "median": float(median),
            "p5": float(p5), "p95": float(p95), "n": int(finite.size), "n_nan": n_nan}


def _is_finite(v: Any) -> bool:
    return v is not None and math.isfinite(float(v))


def _finite(v: Any) -> float:
    return float(v) if _is_finite(v) else math.inf


def _json_float(v: Any) -> float | None:
    return float(v) if _is_finite(v) else None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "nan"
    return "–" if v is None else str(v)
