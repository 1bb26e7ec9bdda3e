"""Export a ``medseg train`` run directory to a MONAI bundle.

The bundle gets the run's best weights (``models/model.pt``, a plain state dict), configs rendered
from the run's resolved config (network, pre-processing, loss, fold, dataset path), metadata whose
``eval_metrics`` come from the evaluation report (``summary.json`` of ``medseg evaluate``) or, when
there is none, from the best validation epoch of ``metrics.jsonl``, the run's config and split as
provenance under ``docs/training_run/``, and a TorchScript ``models/model.ts`` made by MONAI's
``ckpt_export`` (and, with ``onnx=True``, ``models/model.onnx`` checked against eager PyTorch by
:mod:`medseg.bundle.onnx`). The bundle is assembled in a temporary folder next to ``OUT_DIR`` and renamed into
place only when complete.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from medseg.bundle.large_files import write_large_files
from medseg.bundle.template import BundleParams, write_bundle
from medseg.errors import InputError
from medseg.utils.rundir import CONFIG_FILE, DATALIST_FILE, INIT_FILE, PLANS_FILE, VAL_PREFIX, best_record

__all__ = ["export_run", "params_from_run", "find_report", "report_metrics", "portable", "run_parent"]

logger = logging.getLogger(__name__)


def find_report(run_dir: Path, report: str | Path | None = None) -> Path | None:
    """``summary.json`` given (file or folder), else in ``RUN_DIR/report/`` or ``RUN_DIR/../report/``."""
    if report is not None:
        p = Path(report)
        p = p / "summary.json" if p.is_dir() else p
        if not p.is_file():
            raise InputError(f"--report {report}: no summary.json there")
        return p
    for candidate in (run_dir / "report" / "summary.json", run_dir.parent / "report" / "summary.json"):
        if candidate.is_file():
            return candidate
    return None


def report_metrics(summary: dict[str, Any]) -> dict[str, float | None]:
    """Flat metrics from a ``medseg evaluate`` summary: foreground means and per-class Dice / HD95 means."""
    out: dict[str, float | None] = {}
    for metric, value in (summary.get("mean_foreground") or {}).items():
        out[f"mean_{metric}"] = value
    for entry in (summary.get("classes") or {}).values():
        for metric in ("dice", "hd95"):
            stats = entry.get("metrics", {}).get(metric) or {}
            out[f"{entry.get('name', entry.get('label'))}_{metric}"] = stats.get("mean")
    return out


def _validation_metrics(run_dir: Path) -> dict[str, float | None]:
    best = best_record(run_dir)
    return {k: v for k, v in best["metrics"].items() if k.startswith(VAL_PREFIX)} if best else {}


def run_parent(run_dir: Path) -> dict[str, str] | None:
    """The weights a run started from (``medseg train --init``): name, kind and SHA-256 from ``init.json``."""
    path = Path(run_dir) / INIT_FILE
    if not path.is_file():
        return None
    source = json.loads(path.read_text(encoding="utf-8"))["source"]
    return {"name": str(source["name"]), "kind": str(source["kind"]), "sha256": str(source["sha256"])}


def params_from_run(run_dir: Path, payload: dict[str, Any], name: str,
                    metrics: dict[str, float | None]) -> BundleParams:
    """Bundle parameters equal to the run's resolved training config."""
    from medseg.inference.predict import plan_of_config

    cfg = payload["config"]
    plan = plan_of_config(cfg)
    net = plan.network
    parent = run_parent(run_dir)
    origin = f"; fine-tuned from {parent['kind']} {parent['name']} (sha256 {parent['sha256']})" if parent else ""
    return BundleParams(
        name=name, parent=parent,
        changelog={"0.1.0": f"exported from medseg run {run_dir.name} (epoch {payload.get('epoch')}){origin}"},
        labels=dict(plan.label_spec.names), modality=plan.channel_names[0], plan=plan.to_dict(),
        channels=tuple(net.filters), strides=tuple(max(s) for s in net.strides[1:]), num_res_units=net.num_res_units,
        pixdim=tuple(plan.spacing), patch_size=tuple(plan.patch_size),
        loss=cfg["loss"], loss_args=dict(cfg.get("loss_args") or {}), epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
        weight_decay=float(cfg["weight_decay"]), batch_size=plan.batch_size,
        samples_per_case=plan.samples_per_case, fold=int(cfg["fold"]), folds=int(cfg["folds"]),
        seed=int(cfg["seed"]), eval_metrics=metrics,
        data_source=f"dataset `{Path(cfg['data']).resolve().name}` (MSD / nnU-Net v2 layout)")


def export_run(run_dir: str | Path, out_dir: str | Path, report: str | Path | None = None,
               name: str | None = None, overwrite: bool = False, torchscript: bool = True,
               onnx: bool = False) -> Path:
    """Write the bundle of ``run_dir`` to ``out_dir``; returns ``out_dir``."""
    from medseg.inference.predict import read_checkpoint

    run = Path(run_dir)
    if not (run / CONFIG_FILE).is_file():
        raise InputError(f"{run}: not a medseg training run (no config.json)")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: exists and is not empty (choose another folder or pass --force)")
    if onnx:
        from medseg.bundle.onnx import require_onnx

        require_onnx()  # before any work
    ckpt, payload = read_checkpoint(run)
    summary_path = find_report(run, report)
    if summary_path is not None:
        metrics = report_metrics(json.loads(summary_path.read_text(encoding="utf-8")))
        source = f"evaluation report {summary_path}"
    else:
        metrics = _validation_metrics(run)
        source = f"best validation epoch of {run / 'metrics.jsonl'}"
    params = params_from_run(run, payload, name or out.name, metrics)
    provenance = (f"Exported from the medseg training run `{run.resolve().name}` (checkpoint `{ckpt.name}`, epoch "
                  f"{payload.get('epoch')}); evaluation metrics from the "
                  f"{portable(source, _anchors(run, payload['config']))}.\n")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_bundle(tmp, params, provenance)
        torch.save(payload["model"], tmp / "models" / "model.pt")
        anchors = _anchors(run, payload["config"])
        copies = [(run / f, f) for f in (CONFIG_FILE, DATALIST_FILE, PLANS_FILE, INIT_FILE)]
        copies += [(summary_path, "evaluation_summary.json")] if summary_path is not None else []
        for src, name in copies:
            if src.is_file():
                text = json.dumps(portable(json.loads(src.read_text(encoding="utf-8")), anchors), indent=2) + "\n"
                (tmp / "docs" / "training_run").mkdir(parents=True, exist_ok=True)
                (tmp / "docs" / "training_run" / name).write_text(text, encoding="utf-8")
        if torchscript:
            from medseg.bundle.verify import export_torchscript

            export_torchscript(tmp)
        if onnx:
            from medseg.bundle.onnx import export_run_onnx

            export_run_onnx(ckpt, tmp / "models" / "model.onnx")
        write_large_files(tmp)  # last: every weight file is in models/ by now
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("bundle written to %s (metrics from the %s)", out, source)
    return out


def portable(value: Any, anchors: dict[str, str]) -> Any:
    """``value`` (str, list, dict) with absolute paths made relative.

    A path under one of ``anchors`` (absolute folder -> placeholder, e.g. the dataset folder ->
    ``"<dataset_dir>"``) becomes ``placeholder/relative/part``; any other absolute path keeps only
    its last component. An exported bundle thus names no folder of the machine it was made on.
    """
    if isinstance(value, dict):
        return {k: portable(v, anchors) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, anchors) for v in value]
    if not isinstance(value, str):
        return value
    for folder, placeholder in sorted(anchors.items(), key=lambda kv: -len(kv[0])):
        value = value.replace(folder, placeholder)
    return _ABSOLUTE.sub(lambda m: Path(m.group(0)).name, value)


_ABSOLUTE = re.compile(r"(?<![\w.<>:/])/(?:[^\s/'\"`,;()<>]+/)*[^\s/'\"`,;()<>]+")


def _anchors(run: Path, cfg: dict[str, Any]) -> dict[str, str]:
    return {str(Path(cfg["data"]).resolve()): "<dataset_dir>", str(run.resolve()): "<run_dir>",
            str(run.resolve().parent): "<runs>"}
