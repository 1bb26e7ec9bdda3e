"""The robustness report: a text table (stdout), ``robustness.json``, ``robustness.md``, ``robustness.png``
(Dice per class and shift) and a self-contained ``robustness.html`` embedding the plot."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from medseg.utils.files import atomic_write_text

__all__ = ["table_rows", "text_table", "markdown_table", "write_report", "plot"]


def _f(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: shift, strength, Dice per class, mean Dice, change, HD95 per class (mm)."""
    classes = list(result["rows"][0]["dice"])
    header = ["shift", "strength", *[f"Dice {c}" for c in classes], "mean Dice", "change",
              *[f"HD95 {c} (mm)" for c in classes]]
    rows = []
    for r in result["rows"]:
        delta = r["delta_mean_dice"]
        rows.append([r["shift"], r["strength"], *[_f(r["dice"][c]) for c in classes], _f(r["mean_dice"]),
                     "-" if delta is None else f"{delta:+.3f}", *[_f(r["hd95"][c], 2) for c in classes]])
    return header, rows


def text_table(result: dict[str, Any]) -> str:
    header, rows = table_rows(result)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)) for line in [header, *rows]]
    return "\n".join(lines)


def markdown_table(result: dict[str, Any]) -> str:
    header, rows = table_rows(result)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    """Grouped bars: Dice per class (and the mean) for each variant, the unshifted mean as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    classes = list(rows[0]["dice"])
    series = [(c, [r["dice"][c] or 0.0 for r in rows]) for c in classes] + [("mean", [r["mean_dice"] or 0.0 for r in rows])]
    fig, ax = plt.subplots(figsize=(1.4 + 1.1 * len(rows), 3.6))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series):
        ax.bar([x + (i - (len(series) - 1) / 2) * width for x in range(len(rows))], values, width, label=name)
    if rows[0]["mean_dice"] is not None:
        ax.axhline(rows[0]["mean_dice"], color="k", lw=0.8, ls="--", label="unshifted mean")
    ax.set_xticks(range(len(rows)), [r["shift"] for r in rows], rotation=20)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice")
    ax.set_title(f"Robustness to acquisition shifts ({result['modality']}, {result['cases']} cases)")
    ax.legend(fontsize=7, ncol=len(series) + 1, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(result: dict[str, Any], out: Path) -> None:
    """Write ``robustness.json``, ``.md``, ``.png`` and ``.html`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "robustness.json", json.dumps(result, indent=2) + "\n")
    png = plot(result, out / "robustness.png")
    intro = (f"{result['cases']} cases, modality {result['modality']}, model(s): {', '.join(result['models'])}. "
             "Dice and HD95 (mm) are means over the cases; change is the mean Dice minus the unshifted one.")
    atomic_write_text(out / "robustness.md", f"# Robustness to acquisition shifts\n\n{intro}\n\n"
                      f"{markdown_table(result)}\n\n![Dice per shift](robustness.png)\n")
    header, rows = table_rows(result)
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    atomic_write_text(out / "robustness.html", (
        "<!doctype html><html><head><meta charset='utf-8'><title>medseg robustness</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>"
        f"<h1>Robustness to acquisition shifts</h1><p>{html.escape(intro)}</p>"
        f"<table><tr>{head}</tr>{cells}</table>"
        f"<p><img alt='Dice per shift' src='data:image/png;base64,{image}'></p></body></html>\n"))
