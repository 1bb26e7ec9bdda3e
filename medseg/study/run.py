"""Loss study: every loss x seed trained with everything else equal, evaluated on held-out cases.

One plan is resolved once (:func:`medseg.training.train.prepare_plan`) and passed to every run, with
the same fold split (fold 0, ``split_seed`` fixed), augmentation, epochs and batch size; only the
loss and the model seed vary. Each run is predicted and scored on the dataset's test split
(``imagesTs`` / ``labelsTs``) with lesion-wise metrics. Layout::

    STUDY_DIR/study_state.json            settings, the plan and the parent MLflow run (first start)
    STUDY_DIR/plans.json                  the plan, its fingerprint and sources
    STUDY_DIR/mlflow_run.json             the parent MLflow run (tag ``study``)
    STUDY_DIR/runs/<loss>/seed<k>/        a training run directory (:mod:`medseg.utils.rundir`) with
        pred/ eval/                       test predictions and their evaluation
        study_row.json                    written last, atomically: the run is finished and evaluated
    STUDY_DIR/study.csv, study.json, report.html   (:mod:`medseg.study.report`)

MLflow: the training run of each (loss, seed) is a child of the parent run (tags
``mlflow.parentRunId``, ``study``, ``loss``, ``seed``) and receives the evaluation metrics
(:func:`medseg.handlers.tracking.log_evaluation`) plus ``eval_lesion_small_recall_<class>``. The
study's numbers are read back from those runs, never carried over in memory.

Resuming: running the same study again skips runs holding ``study_row.json``, resumes a run with
checkpoints from its last checkpoint, and restarts a run killed before its first checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.metrics.lesion import DEFAULT_SIZE_BINS_MM3
from medseg.study.report import ROW_FIELDS, ROW_FILE, ROW_METRICS, study_rows, write_study
from medseg.utils.files import atomic_write_text
from medseg.utils.rundir import MLFLOW_RUN_FILE, PLANS_FILE, checkpoint_dir

__all__ = ["StudyConfig", "StudyRun", "ROW_FIELDS", "ROW_METRICS", "STATE_FILE", "ROW_FILE", "validate_study",
           "run_study", "run_dir_of", "study_rows"]

logger = logging.getLogger(__name__)

STATE_FILE = "study_state.json"
RUNS_DIR = "runs"
PARENT_TAG = "mlflow.parentRunId"
#: TrainConfig fields the study sets itself.
_STUDY_OWNED = frozenset({"data", "out", "epochs", "loss", "loss_args", "device", "tracking_uri", "experiment",
                          "run_name", "seed", "split_seed", "fold", "plan", "plan_sources", "tags"})


@dataclass
class StudyConfig:
    """Settings of a loss study.

    Attributes:
        data: dataset folder with a labelled test split (``imagesTs`` + ``labelsTs``).
        out: study folder.
        losses: registered loss names (:data:`medseg.losses.LOSSES`).
        seeds: model seeds ``0 .. seeds-1`` per loss.
        epochs: epochs of every run.
        baseline: the loss every other loss is compared with (one of ``losses``).
        loss_args: per-loss keyword arguments, ``{loss: {arg: value}}``.
        small_lesion_mm3: reference lesions below this volume count as small.
        size_bins: lesion-size bin edges (mm^3) of the evaluation and the Dice-by-size plot.
        train_overrides: other :class:`~medseg.training.train.TrainConfig` fields, equal for every run.
        command: the command line that started the study (recorded in ``study.json``).
    """

    data: str
    out: str
    losses: tuple[str, ...]
    seeds: int = 3
    epochs: int = 20
    baseline: str = "dice_ce"
    loss_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    tracking_uri: str | None = None
    experiment: str = "medseg-study"
    device: str = "auto"
    small_lesion_mm3: float = 500.0
    size_bins: tuple[float, ...] = DEFAULT_SIZE_BINS_MM3
    n_boot: int = 2000
    train_overrides: dict[str, Any] = field(default_factory=dict)
    command: str | None = None

    @property
    def name(self) -> str:
        return Path(self.out).resolve().name

    @property
    def lesion_bins(self) -> tuple[float, ...]:
        """``size_bins`` with ``small_lesion_mm3`` as an edge, so the small lesions are whole bins."""
        return tuple(sorted({float(e) for e in self.size_bins} | {float(self.small_lesion_mm3)}))


@dataclass(frozen=True)
class StudyRun:
    loss: str
    seed: int
    run_dir: Path
    mlflow_run_id: str
    trained: bool  # False: found finished and evaluated, not trained again


def run_dir_of(out: str | Path, loss: str, seed: int) -> Path:
    return Path(out) / RUNS_DIR / loss / f"seed{seed}"


def validate_study(cfg: StudyConfig) -> None:
    """Every problem of the study settings at once, before anything is trained or written.

    Raises:
        InputError: unknown losses, ``--loss-args`` for losses not in the study or that a loss
            rejects (each loss is built with :func:`medseg.losses.create_loss`), a bad baseline,
            seeds, epochs or override; a dataset without a labelled test split.
    """
    from medseg.losses import LOSSES, create_loss
    from medseg.training.train import TrainConfig

    problems: list[str] = []
    unknown = [name for name in cfg.losses if name not in LOSSES]
    if unknown:
        problems.append(f"unknown loss(es) {', '.join(map(repr, unknown))}; valid names: {', '.join(LOSSES.names)}")
    if len(set(cfg.losses)) != len(cfg.losses) or not cfg.losses:
        problems.append(f"--losses must name distinct losses, got {list(cfg.losses)}")
    for name in sorted(set(cfg.loss_args) - set(cfg.losses)):
        problems.append(f"--loss-args: {name!r} is not one of --losses")
    for name in cfg.losses:
        args = cfg.loss_args.get(name, {})
        if name not in LOSSES:
            continue
        if not isinstance(args, Mapping):
            problems.append(f"--loss-args: {name!r} needs an object of arguments, got {args!r}")
            continue
        try:
            create_loss(name, **args)
        except InputError as exc:
            problems.append(f"--loss-args {name}: {exc}")
    if cfg.baseline not in cfg.losses:
        problems.append(f"--baseline {cfg.baseline!r} is not one of --losses {list(cfg.losses)}")
    if not (math.isfinite(cfg.small_lesion_mm3) and cfg.small_lesion_mm3 > 0):
        problems.append(f"--small-lesion must be a volume > 0 mm^3, got {cfg.small_lesion_mm3}")
    if cfg.seeds < 1:
        problems.append(f"--seeds must be >= 1, got {cfg.seeds}")
    owned = sorted(set(cfg.train_overrides) & _STUDY_OWNED)
    if owned:
        problems.append(f"train overrides {', '.join(owned)} are set by the study itself")
    try:
        TrainConfig(data=cfg.data, out=cfg.out, epochs=cfg.epochs, **{k: v for k, v in cfg.train_overrides.items()
                                                                      if k not in _STUDY_OWNED}).validate()
    except (InputError, TypeError) as exc:
        problems.append(str(exc))
    root = Path(cfg.data)
    root = root.parent if root.is_file() else root
    for folder in ("imagesTs", "labelsTs"):
        if not (root / folder).is_dir() or not any(p.name.endswith((".nii", ".nii.gz")) for p in (root / folder).iterdir()):
            problems.append(f"--data {cfg.data}: no cases in {folder}/ (the study scores the held-out cases)")
    if problems:
        raise InputError(f"{len(problems)} problem(s) with the study settings:\n  " + "\n  ".join(problems))


def run_study(cfg: StudyConfig, max_runs: int | None = None,
              on_run: Callable[[StudyRun], None] | None = None) -> dict[str, Any]:
    """Train, evaluate and report every loss x seed (resuming what a previous start left).

    Args:
        cfg: the study settings.
        max_runs: stop after this many runs were trained in this call (``None``: all); a stopped
            study is continued by calling again.
        on_run: called after each run is finished and evaluated.

    Returns:
        ``study.json``'s content (:func:`medseg.study.report.write_study`); ``{"complete": False, ...}``
        when ``max_runs`` stopped the study early.
    """
    from medseg.handlers.tracking import MLflowTracker, default_tracking_uri

    validate_study(cfg)
    start = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state = _load_state(cfg)
    uri = state["tracking_uri"] if state else (cfg.tracking_uri or default_tracking_uri())
    parent = MLflowTracker(out, uri, cfg.experiment, run_name=f"study {cfg.name}", resume=state is not None)
    if state is None:
        parent.set_tags({"study": cfg.name, "losses": ",".join(cfg.losses), "seeds": cfg.seeds,
                         "baseline": cfg.baseline})
        parent.log_params({"epochs": cfg.epochs, "data": str(Path(cfg.data).resolve()), **cfg.train_overrides})
        plan, sources = _plan_once(cfg)
        state = {"settings": _settings(cfg), "tracking_uri": uri, "parent_run_id": parent.run_id,
                 "plan": plan, "plan_sources": sources, "elapsed_s": 0.0}
        atomic_write_text(out / STATE_FILE, json.dumps(state, indent=1) + "\n")
    runs: list[StudyRun] = []
    trained = 0
    try:
        for loss in cfg.losses:
            for seed in range(cfg.seeds):
                run_dir = run_dir_of(out, loss, seed)
                now = not (run_dir / ROW_FILE).is_file()
                if now:
                    if max_runs is not None and trained >= max_runs:
                        _save_elapsed(out, state, start)
                        parent.finish("KILLED")
                        return {"complete": False, "runs": [asdict(r) for r in runs]}
                    _train_and_evaluate(cfg, state, loss, seed, run_dir)
                    trained += 1
                row = json.loads((run_dir / ROW_FILE).read_text(encoding="utf-8"))
                runs.append(StudyRun(loss, seed, run_dir, row["mlflow_run_id"], trained=now))
                if on_run is not None:
                    on_run(runs[-1])
    except BaseException:
        _save_elapsed(out, state, start)
        parent.finish("KILLED")
        raise
    elapsed = _save_elapsed(out, state, start)
    study = write_study(cfg, state, runs, elapsed)
    for name in study["outputs"].values():
        parent.log_artifact(name)
    parent.finish("FINISHED")
    return study


# -- one run -------------------------------------------------------------------------------------
def _train_and_evaluate(cfg: StudyConfig, state: dict[str, Any], loss: str, seed: int, run_dir: Path) -> None:
    from medseg.evaluation.evaluate import evaluate_folders
    from medseg.handlers.tracking import tracking_client
    from medseg.inference.predict import predict
    from medseg.training.train import TrainConfig, train

    tags = {PARENT_TAG: state["parent_run_id"], "study": cfg.name, "loss": loss, "seed": str(seed)}
    tcfg = TrainConfig(data=cfg.data, out=str(run_dir), epochs=cfg.epochs, loss=loss,
                       loss_args=dict(cfg.loss_args.get(loss, {})), device=cfg.device,
                       tracking_uri=state["tracking_uri"], experiment=cfg.experiment, run_name=f"{loss} seed {seed}",
                       seed=seed, split_seed=0, fold=0, plan=state["plan"], plan_sources=state["plan_sources"],
                       tags=tags, **cfg.train_overrides)
    resume = checkpoint_dir(run_dir).is_dir() and any(checkpoint_dir(run_dir).glob("*.pt"))
    if not resume and (run_dir / MLFLOW_RUN_FILE).is_file():  # killed before its first checkpoint
        stale = json.loads((run_dir / MLFLOW_RUN_FILE).read_text(encoding="utf-8"))["run_id"]
        tracking_client(state["tracking_uri"]).set_terminated(stale, "KILLED")
    logger.info("study %s: %s seed %d (%s)", cfg.name, loss, seed, "resuming" if resume else "training")
    result = train(tcfg, resume=resume)
    root = Path(cfg.data)
    root = root.parent if root.is_file() else root
    predict(run_dir, root / "imagesTs", run_dir / "pred", device=cfg.device)
    summary = evaluate_folders(run_dir / "pred", root / "labelsTs", run_dir / "eval", dataset=cfg.data,
                               lesion_wise=True, size_bins=cfg.lesion_bins, tracking_uri=state["tracking_uri"],
                               run_id=result.mlflow_run_id, progress=False)
    if "mlflow_error" in summary:
        raise RuntimeError(f"evaluation of {run_dir} did not reach MLflow: {summary['mlflow_error']}")
    _log_small_lesion_recall(tracking_client(state["tracking_uri"]), result.mlflow_run_id, summary, cfg.small_lesion_mm3)
    classes = [entry["name"] for entry in summary["classes"].values()]
    atomic_write_text(run_dir / ROW_FILE, json.dumps({"loss": loss, "seed": seed, "mlflow_run_id": result.mlflow_run_id,
                                                      "classes": classes}) + "\n")


def _log_small_lesion_recall(client: Any, run_id: str, summary: Mapping[str, Any], small_mm3: float) -> None:
    """``eval_lesion_small_recall_<class>``: detected / reference lesions in the size bins below ``small_mm3``."""
    from mlflow.entities import Metric

    from medseg.handlers.tracking import metric_safe_name

    now = int(time.time() * 1000)
    metrics = []
    for entry in (summary.get("lesions") or {}).values():
        small = [b for b in entry["recall_by_size"] if b["max_mm3"] is not None and b["max_mm3"] <= small_mm3]
        lesions = sum(b["lesions"] for b in small)
        if lesions:
            value = sum(b["detected"] for b in small) / lesions
            metrics.append(Metric(f"eval_lesion_small_recall_{metric_safe_name(entry['name'])}", value, now, 0))
    if metrics:
        client.log_batch(run_id, metrics=metrics)


# -- state -----------------------------------------------------------------------------------------
def _settings(cfg: StudyConfig) -> dict[str, Any]:
    return {"data": str(Path(cfg.data).resolve()), "epochs": cfg.epochs,
            "train_overrides": json.loads(json.dumps(cfg.train_overrides))}


def _load_state(cfg: StudyConfig) -> dict[str, Any] | None:
    path = Path(cfg.out) / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    if state["settings"] != _settings(cfg):
        raise InputError(f"--out {cfg.out}: holds a study with other settings ({state['settings']}); choose "
                         "another folder or rerun with the same --data, --epochs and training options")
    return state


def _plan_once(cfg: StudyConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """The plan every run uses: resolved once from the first run's settings, written to ``plans.json``."""
    from medseg.training.train import TrainConfig, prepare_plan

    first = TrainConfig(data=cfg.data, out=cfg.out, epochs=cfg.epochs, loss=cfg.losses[0], device=cfg.device,
                        **cfg.train_overrides)
    prepare_plan(first)
    if first.plan is None or not (Path(cfg.out) / PLANS_FILE).is_file():
        raise RuntimeError("prepare_plan did not resolve and write the plan")
    return first.plan, dict(first.plan_sources or {})


def _save_elapsed(out: Path, state: dict[str, Any], start: float) -> float:
    state["elapsed_s"] = float(state.get("elapsed_s", 0.0)) + (time.time() - start)
    atomic_write_text(out / STATE_FILE, json.dumps(state, indent=1) + "\n")
    return state["elapsed_s"] if math.isfinite(state["elapsed_s"]) else 0.0
