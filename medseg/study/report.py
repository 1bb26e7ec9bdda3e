"""Loss-study results: read back from MLflow, aggregated, compared, drawn and written.

:func:`write_study` reads every child run's evaluation metrics (``MlflowClient.get_run``), its
per-case and per-lesion tables (the ``evaluation/`` artifacts) and its validation curve (metric
history), and writes ``study.csv`` (one row per run and class), ``study.json`` and a self-contained
``report.html``. :func:`render_markdown` turns ``study.json`` into a Markdown page with PNG figures.

Paired comparisons: the per-case score of a loss minus the baseline's on the same test case and
seed, with a percentile bootstrap 95% interval over those pairs (:mod:`medseg.metrics.bootstrap`).
Verdict of a claim: *holds* when the interval lies on the claimed side of 0, *does not hold* when it
lies on the other side, *inconclusive* when it contains 0.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.metrics.bootstrap import paired_bootstrap_ci
from medseg.metrics.lesion import size_bin_names
from medseg.utils.files import atomic_write_text
from medseg.utils.rundir import VAL_KEY_METRIC

__all__ = ["ROW_FILE", "ROW_METRICS", "ROW_FIELDS", "study_rows", "write_study", "render_markdown", "figures", "verdict", "STUDY_CSV", "STUDY_JSON", "REPORT_HTML"]

STUDY_CSV, STUDY_JSON, REPORT_HTML = "study.csv", "study.json", "report.html"
_LOWER_IS_BETTER = {"hd95"}
#: In each run directory, written last: the run is trained, evaluated and logged.
ROW_FILE = "study_row.json"
#: study.csv column -> MLflow metric of the child run (``{c}``: MLflow-safe class name).
ROW_METRICS: dict[str, str] = {
    "dice": "eval_dice_{c}", "hd95": "eval_hd95_{c}", "nsd": "eval_nsd_{c}",
    "lesion_recall": "eval_lesion_recall_{c}", "lesion_precision": "eval_lesion_precision_{c}",
    "small_lesion_recall": "eval_lesion_small_recall_{c}",
}
ROW_FIELDS: tuple[str, ...] = ("loss", "seed", "class", *ROW_METRICS, "mlflow_run_id")


def write_study(cfg: Any, state: dict[str, Any], runs: Sequence[Any], elapsed_s: float) -> dict[str, Any]:
    """Collect every run from MLflow and write ``study.csv``, ``study.json``, ``report.html`` into ``cfg.out``."""
    from medseg.handlers.tracking import tracking_client

    client = tracking_client(state["tracking_uri"])
    rows: list[dict[str, Any]] = []
    cases: list[dict[str, Any]] = []
    lesions: list[dict[str, Any]] = []
    curves: dict[str, dict[str, list[list[float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            classes = json.loads((Path(run.run_dir) / ROW_FILE).read_text(encoding="utf-8"))["classes"]
            rows += study_rows(client, run.mlflow_run_id, run.loss, run.seed, classes)
            for name, into in (("metrics.csv", cases), ("lesions.csv", lesions)):
                path = client.download_artifacts(run.mlflow_run_id, f"evaluation/{name}",
                                                 str(Path(tmp) / f"{run.loss}-{run.seed}"))
                with open(path, newline="", encoding="utf-8") as f:
                    into += [{**r, "loss": run.loss, "seed": run.seed} for r in csv.DictReader(f)]
            history = client.get_metric_history(run.mlflow_run_id, VAL_KEY_METRIC)
            curves.setdefault(run.loss, {})[str(run.seed)] = sorted([int(m.step), float(m.value)] for m in history)
    losses = list(cfg.losses)
    class_names = list(dict.fromkeys(r["class"] for r in rows))
    rarest = _rarest_class(cases)
    study = {
        "name": cfg.name, "command": cfg.command, "wall_time_s": round(elapsed_s, 1),
        "settings": {"data": str(Path(cfg.data).resolve()), "losses": losses, "seeds": cfg.seeds,
                     "epochs": cfg.epochs, "baseline": cfg.baseline, "loss_args": cfg.loss_args,
                     "train_overrides": state["settings"]["train_overrides"], "device": cfg.device,
                     "small_lesion_mm3": cfg.small_lesion_mm3, "size_bins_mm3": list(cfg.lesion_bins),
                     "n_boot": cfg.n_boot},
        "plan": state["plan"], "tracking_uri": state["tracking_uri"], "parent_run_id": state["parent_run_id"],
        "runs": [{"loss": r.loss, "seed": r.seed, "mlflow_run_id": r.mlflow_run_id, "run_dir": str(r.run_dir)}
                 for r in runs],
        "classes": class_names, "rarest_class": rarest, "rows": rows,
        "aggregate": _aggregate(rows, losses, class_names, list(ROW_METRICS)),
        "comparisons": [_compare(cases, loss, cfg.baseline, c, "dice", cfg.n_boot)
                        for loss in losses if loss != cfg.baseline for c in class_names],
        "dice_by_size": _dice_by_size(lesions, losses, class_names, cfg.lesion_bins),
        "val_curves": curves,
    }
    study["claims"] = _claims(study, cases, lesions, cfg)
    out = Path(cfg.out)
    outputs = {"study_csv": out / STUDY_CSV, "study_json": out / STUDY_JSON, "report_html": out / REPORT_HTML}
    study["outputs"] = {k: str(v) for k, v in outputs.items()}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(ROW_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    atomic_write_text(outputs["study_csv"], buf.getvalue())
    atomic_write_text(outputs["study_json"], json.dumps(study, indent=1, allow_nan=False) + "\n")
    atomic_write_text(outputs["report_html"], _html(study))
    return study


def study_rows(client: Any, run_id: str, loss: str, seed: int, classes: Sequence[str]) -> list[dict[str, Any]]:
    """study.csv rows of one run, read from its MLflow run (``None`` where the run has no value)."""
    from medseg.handlers.tracking import metric_safe_name

    metrics = client.get_run(run_id).data.metrics
    rows = []
    for name in classes:
        row: dict[str, Any] = {"loss": loss, "seed": seed, "class": name}
        for column, key in ROW_METRICS.items():
            row[column] = metrics.get(key.format(c=metric_safe_name(name)))
        row["mlflow_run_id"] = run_id
        rows.append(row)
    return rows


def verdict(low: float | None, high: float | None, lower_is_better: bool = False) -> str:
    """``holds`` / ``does not hold`` / ``inconclusive`` for "the loss improves the metric" from a CI of differences."""
    if low is None or high is None:
        return "inconclusive"
    better, worse = (high < 0, low > 0) if lower_is_better else (low > 0, high < 0)
    return "holds" if better else "does not hold" if worse else "inconclusive"


# -- aggregation ---------------------------------------------------------------------------------
def _aggregate(rows: list[dict[str, Any]], losses: list[str], classes: list[str],
               metrics: list[str]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for loss in losses:
        for name in classes:
            picked = [r for r in rows if r["loss"] == loss and r["class"] == name]
            entry = {}
            for m in metrics:
                vals = [float(r[m]) for r in picked if r[m] is not None and math.isfinite(float(r[m]))]
                entry[m] = {"mean": float(np.mean(vals)) if vals else None,
                            "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None, "n": len(vals)}
            table.setdefault(loss, {})[name] = entry
    return table


def _per_case(cases: list[dict[str, Any]], loss: str, name: str, metric: str) -> dict[tuple[str, int], float]:
    out = {}
    for r in cases:
        if r["loss"] == loss and r["name"] == name and r.get(metric) not in (None, ""):
            value = float(r[metric])
            if math.isfinite(value):
                out[(r["case"], int(r["seed"]))] = value
    return out


def _compare(cases: list[dict[str, Any]], loss: str, baseline: str, name: str, metric: str,
             n_boot: int) -> dict[str, Any]:
    """Paired bootstrap CI of ``metric(loss) - metric(baseline)`` over (case, seed) pairs of class ``name``."""
    a, b = _per_case(cases, loss, name, metric), _per_case(cases, baseline, name, metric)
    keys = sorted(set(a) & set(b))
    entry: dict[str, Any] = {"loss": loss, "baseline": baseline, "class": name, "metric": metric, "n_pairs": len(keys),
                             "estimate": None, "low": None, "high": None}
    if keys:
        ci = paired_bootstrap_ci(np.array([a[k] for k in keys]), np.array([b[k] for k in keys]), n_boot=n_boot)
        entry.update(estimate=ci.estimate, low=ci.low, high=ci.high)
    return entry


def _small_detection(lesions: list[dict[str, Any]], loss: str, small_mm3: float) -> dict[tuple, float]:
    return {(r["case"], r["label"], r["ref_lesion"], int(r["seed"])): float(r["status"] == "TP")
            for r in lesions if r["loss"] == loss and r["status"] in ("TP", "FN")
            and float(r["ref_volume_mm3"]) < small_mm3}


def _dice_by_size(lesions: list[dict[str, Any]], losses: list[str], classes: list[str],
                  edges: Sequence[float]) -> dict[str, Any]:
    """Mean Dice of reference lesions (missed: 0) per size bin, over seeds and cases."""
    bounds = [0.0, *edges, math.inf]
    out: dict[str, Any] = {}
    for loss in losses:
        for name in classes:
            ref = [r for r in lesions if r["loss"] == loss and r["name"] == name and r["status"] in ("TP", "FN")]
            bins = []
            for label, lo, hi in zip(size_bin_names(edges), bounds[:-1], bounds[1:], strict=True):
                inside = [float(r["dice"] or 0.0) for r in ref if lo <= float(r["ref_volume_mm3"]) < hi]
                bins.append({"bin": label, "lesions": len(inside),
                             "mean_dice": float(np.mean(inside)) if inside else None})
            out.setdefault(loss, {})[name] = bins
    return out


def _rarest_class(cases: list[dict[str, Any]]) -> str | None:
    voxels: dict[str, float] = {}
    for r in cases:
        voxels[r["name"]] = voxels.get(r["name"], 0.0) + float(r.get("gt_voxels") or 0.0)
    return min(voxels, key=lambda k: voxels[k]) if voxels else None


def _claims(study: dict[str, Any], cases: list[dict[str, Any]], lesions: list[dict[str, Any]], cfg: Any) -> list:
    losses, rare, n_boot = set(study["settings"]["losses"]), study["rarest_class"], cfg.n_boot
    claims = []

    def case_claim(text: str, loss: str, ref: str, metric: str, classes: Sequence[str]) -> None:
        for name in classes:
            if {loss, ref} <= losses:
                c = _compare(cases, loss, ref, name, metric, n_boot)
                claims.append({"claim": text, **c, "verdict": verdict(c["low"], c["high"], metric in _LOWER_IS_BETTER)})
            else:
                claims.append({"claim": text, "loss": loss, "baseline": ref, "class": name, "metric": metric,
                               "verdict": "not tested", "why": f"needs {loss} and {ref} in --losses"})

    case_claim("Dice beats CE under strong imbalance", "dice", "ce", "dice", [rare])
    case_claim("Generalized Dice helps rare classes", "generalized_dice", "dice", "dice", [rare])
    ft, base = "focal_tversky", study["settings"]["baseline"]
    if {ft, base} <= losses and ft != base:
        a, b = (_small_detection(lesions, x, cfg.small_lesion_mm3) for x in (ft, base))
        keys = sorted(set(a) & set(b))
        entry = {"claim": "Focal Tversky improves small-lesion recall", "loss": ft, "baseline": base, "class": "all",
                 "metric": f"detection of lesions < {cfg.small_lesion_mm3:g} mm3", "n_pairs": len(keys),
                 "estimate": None, "low": None, "high": None}
        if keys:
            ci = paired_bootstrap_ci(np.array([a[k] for k in keys]), np.array([b[k] for k in keys]), n_boot=n_boot)
            entry.update(estimate=ci.estimate, low=ci.low, high=ci.high)
        claims.append({**entry, "verdict": verdict(entry["low"], entry["high"])})
    else:
        claims.append({"claim": "Focal Tversky improves small-lesion recall", "loss": ft, "baseline": base,
                       "verdict": "not tested", "why": f"needs {ft} and a different baseline"})
    region = "generalized_dice" if "generalized_dice" in losses else base
    case_claim("Boundary loss improves HD95", "boundary", region, "hd95", study["classes"])
    net = study["plan"].get("network", {})
    ds = net.get("name") == "dynunet" and net.get("deep_supervision")
    claims.append({"claim": "Deep-supervision Dice stabilises training", "verdict": "not tested",
                   "why": "the plan's network has deep supervision, but the study compares losses, not "
                          "deep supervision on/off" if ds else
                          f"the plan uses a {net.get('name', '?')} without deep-supervision heads"})
    return claims


# -- figures and pages ---------------------------------------------------------------------------
def figures(study: dict[str, Any]) -> dict[str, bytes]:
    """PNG figures from ``study.json``: ``dice_by_size`` and ``val_curves``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    # classes whose connected components span several size bins (an organ or a vessel tree is one component)
    classes = [c for c in study["classes"] if max(sum(1 for b in loss.get(c, []) if b["lesions"])
                                                  for loss in study["dice_by_size"].values()) > 1]
    fig, axes = plt.subplots(1, max(len(classes), 1), figsize=(4.2 * max(len(classes), 1), 3.4), squeeze=False)
    for ax, name in zip(axes[0], classes, strict=False):
        for loss, per_class in study["dice_by_size"].items():
            bins = [b for b in per_class[name] if b["lesions"]]
            ax.plot([f"{b['bin']}\n(n={b['lesions']})" for b in bins], [b["mean_dice"] for b in bins], marker="o",
                    label=loss)
        ax.set(title=f"{name}: lesion Dice by size", xlabel="reference lesion volume (mm$^3$)", ylabel="Dice",
               ylim=(0, 1))
    axes[0][0].legend(fontsize=7)
    out["dice_by_size"] = _png(fig)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, (loss, seeds) in enumerate(study["val_curves"].items()):
        for j, points in enumerate(seeds.values()):
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, color=f"C{i}", alpha=0.8, ls="-" if j == 0 else "--", label=loss if j == 0 else None)
    ax.set(title="validation mean Dice per epoch (one line per seed)", xlabel="epoch", ylabel=VAL_KEY_METRIC)
    ax.legend(fontsize=7)
    out["val_curves"] = _png(fig)
    plt.close("all")
    return out


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _fmt(stats: dict[str, Any], digits: int = 3) -> str:
    if stats["mean"] is None:
        return "-"
    sd = f" ± {stats['sd']:.{digits}f}" if stats["sd"] is not None else ""
    return f"{stats['mean']:.{digits}f}{sd}"


def _ci(c: dict[str, Any]) -> str:
    if c.get("estimate") is None:
        return "-"
    return f"{c['estimate']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"


def _tables(study: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the aggregate, comparison and claim tables, shared by HTML and Markdown."""
    n = study["settings"]["seeds"]
    head = ["loss", "class", *[m.replace("_", " ") for m in ROW_METRICS]]
    agg = [[loss, name, *[_fmt(per[name][m]) for m in ROW_METRICS]]
           for loss, per in study["aggregate"].items() for name in study["classes"]]
    comp = [[c["loss"], c["class"], str(c["n_pairs"]), _ci(c)] for c in study["comparisons"]]
    claims = [[c["claim"], f"{c['loss']} vs {c['baseline']}" if c.get("loss") else "-", str(c.get("class", "-")),
               str(c.get("metric", "-")), _ci(c), c["verdict"] + (f" ({c['why']})" if c.get("why") else "")]
              for c in study["claims"]]
    return [(f"Test-set scores per loss (mean ± sd over {n} seeds)", head, agg),
            (f"Dice difference to the baseline {study['settings']['baseline']} (paired by case and seed, "
             "bootstrap 95% CI)", ["loss", "class", "pairs", "mean difference [95% CI]"], comp),
            ("Claims", ["claim", "comparison", "class", "metric", "difference [95% CI]", "verdict"], claims)]


def _html(study: dict[str, Any]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>loss study {html.escape(study['name'])}"
             "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}</style></head><body>",
             f"<h1>Loss study {html.escape(study['name'])}</h1><p>wall time {study['wall_time_s']:.0f} s; "
             f"MLflow parent run {html.escape(study['parent_run_id'])}</p>"]
    for title, head, rows in _tables(study):
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                     + "</tr>" + "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>"
                                         for r in rows) + "</table>")
    for name, png in figures(study).items():
        parts.append(f"<h2>{name.replace('_', ' ')}</h2><img alt='{name}' "
                     f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    return "\n".join(parts) + "</body></html>\n"


def render_markdown(study: dict[str, Any], figure_dir: str | Path, figure_prefix: str) -> str:
    """Markdown tables of ``study`` (study.json); figures written to ``figure_dir`` and linked as ``figure_prefix/NAME.png``."""
    figure_dir = Path(figure_dir)
    figure_dir.mkdir(parents=True, exist_ok=True)
    s = study["settings"]
    plan = study["plan"]
    lines = [f"# Loss study: {study['name']}", "",
             "Generated by `medseg study --markdown` from `study.json`; every number below is read back from "
             "the study's MLflow runs. A claim *holds* when the bootstrap 95% interval of the paired difference "
             "(per test case and seed) lies on the claimed side of 0, *does not hold* when it lies on the other "
             "side, and is *inconclusive* when it contains 0.", "",
             f"Command: `{study['command']}`" if study.get("command") else "",
             f"Wall time: {study['wall_time_s'] / 60:.1f} min ({len(study['runs'])} runs: {len(s['losses'])} losses "
             f"x {s['seeds']} seeds, {s['epochs']} epochs each, device {s['device']}).",
             f"Plan (one for every run): network {plan['network']['name']} {plan['network']['filters']}, patch "
             f"{plan['patch_size']}, batch {plan['batch_size']}, spacing {plan['spacing']} mm; "
             f"training overrides {s['train_overrides']}. Rarest class on the test set: {study['rarest_class']}. "
             f"Small lesions: < {s['small_lesion_mm3']:g} mm3.", ""]
    for title, head, rows in _tables(study):
        lines += [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    for name, png in figures(study).items():
        (figure_dir / f"{name}.png").write_bytes(png)
        lines += [f"![{name.replace('_', ' ')}]({figure_prefix}/{name}.png)", ""]
    return "\n".join(lines)
