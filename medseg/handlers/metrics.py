"""Ignite metrics for validation during training: per-class Dice, IoU and HD95 in mm, one empty-mask policy.

``validation_metrics(num_classes)`` returns plain-float ignite metrics for MONAI's
``SupervisedEvaluator(key_val_metric=..., additional_metrics=...)``. All of them read one shared
accumulator, so each validation case's surfaces are computed once per iteration whatever the
number of reported keys.

Why not MONAI's handlers alone: ``MeanDice`` with its default ``ignore_empty=True`` drops false
positives on empty ground truth, and ``HausdorffDistance`` returns NaN/inf when a structure is
missed, which silently leaves the epoch mean. Here every case follows
:mod:`medseg.metrics.policy` (a miss scores Dice 0 and HD95 = image diagonal in mm). Dice and
IoU equal ``monai.metrics.DiceMetric(ignore_empty=False)`` / ``MeanIoU(ignore_empty=False)``
wherever those are defined (checked in the tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric, MetricsLambda
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from medseg.metrics import CONVENTIONS, compute_metrics
from medseg.utils.geometry import spacing_from_affine
from medseg.utils.rundir import KEY_METRIC

__all__ = ["SegmentationMetricsAccumulator", "validation_metrics", "spacing_from_affine"]

_REPORTED = ("dice", "iou", "hd95")


class SegmentationMetricsAccumulator(Metric):
    """Accumulates per-class Dice, IoU and HD95 sums over validation cases.

    ``update`` takes ``(y_pred, y)``: sequences of one-hot tensors ``(C, *spatial)`` (values in
    {0, 1}; MetaTensors carry the affine for the spacing), or batched tensors ``(B, C, *spatial)``.
    ``compute`` returns ``{"dice": (C-1,), "iou": (C-1,), "hd95": (C-1,)}`` numpy means over cases
    for the foreground classes 1..C-1 (all C channels with ``include_background``: overlapping
    region channels, which have no background channel).
    """

    def __init__(self, num_classes: int, hd_convention: str = "monai",
                 output_transform: Callable[[Any], Any] = lambda x: x, device: str | torch.device = "cpu",
                 include_background: bool = False) -> None:
        self.first = 0 if include_background else 1
        if int(num_classes) < self.first + 1:
            raise ValueError(f"num_classes must be >= {self.first + 1} (background + at least one class unless "
                             f"include_background), got {num_classes!r}")
        if hd_convention not in CONVENTIONS:
            raise ValueError(f"hd_convention must be one of {list(CONVENTIONS)}, got {hd_convention!r}")
        self.num_classes = int(num_classes)
        self.hd_convention = hd_convention
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sums = torch.zeros(len(_REPORTED), self.num_classes - self.first, dtype=torch.float64, device=self._device)
        self._count = torch.zeros((), dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        y_pred, y = output[0], output[1]
        if isinstance(y_pred, torch.Tensor):  # batched (B, C, *spatial)
            y_pred, y = list(y_pred), list(y)
        if len(y_pred) != len(y):
            raise ValueError(f"y_pred and y must hold the same number of cases, got {len(y_pred)} and {len(y)}")
        for p, g in zip(y_pred, y, strict=True):
            if p.shape != g.shape or p.shape[0] != self.num_classes:
                raise ValueError(f"expected one-hot (C={self.num_classes}, *spatial) pairs, got {tuple(p.shape)} and "
                                 f"{tuple(g.shape)} (post-process with AsDiscrete(argmax=True, to_onehot=C)?)")
            spacing = spacing_from_affine(g, p.ndim - 1)
            result = compute_metrics(p, g, spacing, labels=range(self.first, self.num_classes), one_hot=True,
                                     convention=self.hd_convention)
            values = [[getattr(result[k], name) for k in range(self.first, self.num_classes)] for name in _REPORTED]
            self._sums += torch.tensor(values, dtype=torch.float64, device=self._device)
            self._count += 1

    @sync_all_reduce("_sums", "_count")
    def compute(self) -> dict[str, np.ndarray]:
        if self._count.item() == 0:
            raise NotComputableError("SegmentationMetricsAccumulator needs at least one case before compute()")
        means = (self._sums / self._count).cpu().numpy()
        return {name: means[i] for i, name in enumerate(_REPORTED)}


def validation_metrics(num_classes: int, label_names: dict[int, str] | None = None,
                       hd_convention: str = "monai",
                       output_transform: Callable[[Any], Any] | None = None,
                       include_background: bool = False) -> dict[str, Metric]:
    """Ignite metrics ``{"mean_dice", "dice_<name>", "iou_<name>", "hd95_<name>"}`` for foreground classes.

    Args:
        num_classes: C, channels of the one-hot outputs including background.
        label_names: ``{channel: name}`` for the keys; missing channels are named ``label_<k>``.
        hd_convention: HD95 convention (:mod:`medseg.metrics.segmentation`).
        output_transform: maps the engine output to ``(y_pred, y)``; default
            ``monai.handlers.from_engine(["pred", "label"])``.
        include_background: report channel 0 too (region outputs: every channel is a structure).

    Returns:
        Metrics whose ``engine.state.metrics`` values are plain floats (ready for MLflow);
        ``"mean_dice"`` (foreground mean Dice) is meant as the evaluator's ``key_val_metric``.
        Distances are in mm; all use the shared empty-mask policy.

    Example::

        metrics = validation_metrics(3, {1: "liver", 2: "tumour"})
        evaluator = SupervisedEvaluator(..., key_val_metric={"mean_dice": metrics.pop("mean_dice")},
                                        additional_metrics=metrics)
    """
    if output_transform is None:
        from monai.handlers import from_engine

        output_transform = from_engine(["pred", "label"])
    names = dict(label_names or {})
    accumulator = SegmentationMetricsAccumulator(num_classes, hd_convention, output_transform=output_transform,
                                                 include_background=include_background)
    out: dict[str, Metric] = {KEY_METRIC: MetricsLambda(lambda r: float(np.mean(r["dice"])), accumulator)}
    first = accumulator.first
    for k in range(first, int(num_classes)):
        name = _safe(names.get(k, f"label_{k}"))
        for metric in _REPORTED:
            out[f"{metric}_{name}"] = MetricsLambda(_picker(metric, k - first), accumulator)
    return out


def _picker(metric: str, index: int) -> Callable[[dict[str, np.ndarray]], float]:
    def pick(result: dict[str, np.ndarray]) -> float:
        return float(result[metric][index])

    return pick


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name).strip()) or "unnamed"
