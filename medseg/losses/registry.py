"""Registry of medseg losses (a ``monai.utils.ComponentStore``) and the training engine's factory.

``create_loss(name, **overrides)`` builds a loss for a network that outputs logits
``(B, C, *spatial)`` trained against label indices ``(B, 1, *spatial)``: its defaults are
``to_onehot_y=True, softmax=True``; ``overrides`` (the user's ``--loss-args`` JSON) win.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from monai.utils import ComponentStore
from torch import nn

from medseg.errors import InputError
from medseg.losses.boundary import BoundaryDiceLoss, BoundaryLoss
from medseg.losses.compound import DiceCELoss, DiceFocalLoss, WeightedSumLoss
from medseg.losses.cross_entropy import CrossEntropyLoss
from medseg.losses.deep_supervision import DeepSupervisionLoss
from medseg.losses.dice import DiceLoss, GeneralizedDiceLoss
from medseg.losses.tversky import FocalTverskyLoss, TverskyLoss

__all__ = [
    "ENGINE_DEFAULTS",
    "LOSSES",
    "create_loss",
    "deep_supervision_loss",
    "region_boundary_loss",
    "weighted_sum_loss",
]

ENGINE_DEFAULTS: dict[str, Any] = {"to_onehot_y": True, "softmax": True}

REGION_LOSSES = ("generalized_dice", "dice")


def region_boundary_loss(
    region: str = "generalized_dice",
    region_weight: float = 1.0,
    boundary_weight: float = 0.01,
    include_background: bool = True,
    boundary_include_background: bool = False,
    reduction: str = "mean",
    spacing: Sequence[float] | float | None = None,
    **common: Any,
) -> WeightedSumLoss:
    """Region + boundary loss as in Kervadec et al. (2019): ``w_r * GDL + w_b * BoundaryLoss``.

    The region term (Generalized Dice by default, or Dice) sees all classes
    (``include_background``); the boundary term sees the foreground classes only, as in the
    paper (``boundary_include_background``). ``boundary_weight`` starts small (0.01) and is raised during training by
    :class:`medseg.handlers.loss_schedule.BoundaryLossSchedule` (terms ``"region"`` and
    ``"boundary"``). ``common`` (``to_onehot_y``, ``sigmoid``, ``softmax``, ``other_act``,
    ``batch``: see :class:`medseg.losses.base.SegLoss`) goes to both terms. Returns a
    :class:`WeightedSumLoss` with ``uses_distance_map = True``.
    """
    if reduction == "none" and bool(include_background) != bool(boundary_include_background):
        raise ValueError(
            "reduction='none' needs the same classes in both terms: set include_background="
            f"{bool(boundary_include_background)} or boundary_include_background={bool(include_background)}"
        )
    if region not in REGION_LOSSES:
        raise ValueError(f"region must be one of {', '.join(REGION_LOSSES)}; got {region!r}")
    region_cls = GeneralizedDiceLoss if region == "generalized_dice" else DiceLoss
    return WeightedSumLoss(
        {
            "region": region_cls(include_background=include_background, reduction=reduction, **common),
            "boundary": BoundaryLoss(
                include_background=boundary_include_background, reduction=reduction, spacing=spacing, **common
            ),
        },
        {"region": region_weight, "boundary": boundary_weight},
    )


def weighted_sum_loss(
    terms: Mapping[str, float], term_args: Mapping[str, Mapping[str, Any]] | None = None, **common: Any
) -> WeightedSumLoss:
    """``WeightedSumLoss`` of registered losses: ``terms`` maps registry names to weights.

    ``common`` arguments go to every term, ``term_args[name]`` to one term only.
    Example: ``weighted_sum_loss({"dice": 1.0, "boundary_only": 0.01}, softmax=True, to_onehot_y=True)``.
    """
    if not isinstance(terms, Mapping) or not terms:
        raise ValueError(f"terms must map loss names to weights, e.g. {{'dice': 1.0}}; got {terms!r}")
    args = dict(term_args or {})
    losses = {name: _build(name, {**common, **dict(args.get(name, {}))}) for name in terms}
    return WeightedSumLoss(losses, dict(terms))


def deep_supervision_loss(
    loss: str = "dice_ce",
    loss_args: Mapping[str, Any] | None = None,
    weight_mode: str = "exp",
    weights: Sequence[float] | None = None,
    normalize_weights: bool = True,
    target_mode: str = "nearest",
    **common: Any,
) -> DeepSupervisionLoss:
    """``DeepSupervisionLoss`` around the registered loss ``loss`` (built with ``common`` + ``loss_args``)."""
    inner = _build(loss, {**common, **dict(loss_args or {})})
    return DeepSupervisionLoss(inner, weight_mode, weights, normalize_weights, target_mode)


LOSSES = ComponentStore("losses", "medseg segmentation losses; build one with medseg.losses.create_loss(name)")
LOSSES.add("dice", "Soft Dice loss (V-Net), plain or squared denominator", DiceLoss)
LOSSES.add("generalized_dice", "Generalized Dice loss (Sudre 2017), square/simple/uniform class weights", GeneralizedDiceLoss)
LOSSES.add("tversky", "Tversky loss (Salehi 2017), alpha weighs FP, beta FN", TverskyLoss)
LOSSES.add("focal_tversky", "Focal Tversky loss (Abraham & Khan 2019), per-class exponent 1/gamma", FocalTverskyLoss)
LOSSES.add(
    "boundary", "Generalized Dice + scheduled boundary loss (Kervadec 2019) on signed distance maps",
    region_boundary_loss,
)
LOSSES.add("boundary_only", "Boundary loss term alone (Kervadec 2019); needs a region loss beside it", BoundaryLoss)
LOSSES.add("boundary_dice", "Dice + lambda * L1/L2 error between soft morphological boundaries", BoundaryDiceLoss)
LOSSES.add("ce", "Cross-entropy on logits (softmax, or binary with sigmoid=True), class weights", CrossEntropyLoss)
LOSSES.add("dice_ce", "Dice + cross-entropy", DiceCELoss)
LOSSES.add("dice_focal", "Dice + focal loss (Lin 2017)", DiceFocalLoss)
LOSSES.add("weighted_sum", "Weighted sum of registered losses: terms={'dice': 1.0, ...}", weighted_sum_loss)
LOSSES.add("deep_supervision", "Deep-supervision wrapper around a registered loss: loss='dice_ce'", deep_supervision_loss)


def _accepted(factory: Callable) -> tuple[list[str], bool]:
    params = inspect.signature(factory).parameters.values()
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _build(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    if not isinstance(name, str) or name not in LOSSES:
        raise InputError(f"unknown loss {name!r}; valid names: {', '.join(LOSSES.names)}")
    factory = LOSSES.components[name].value
    names, open_kwargs = _accepted(factory)
    if not open_kwargs:
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise InputError(
                f"loss {name!r} does not accept argument(s) {', '.join(unknown)}; accepted: {', '.join(names)}"
            )
    try:
        return factory(**kwargs)
    except InputError:
        raise
    except (TypeError, ValueError) as exc:
        raise InputError(f"loss {name!r}: {exc}") from exc


def create_loss(name: str, **overrides: Any) -> nn.Module:
    """Build the registered loss ``name`` for logits ``(B, C, *spatial)`` and label indices ``(B, 1, *spatial)``.

    Defaults ``to_onehot_y=True, softmax=True`` (:data:`ENGINE_DEFAULTS`); ``sigmoid=True`` or an
    ``other_act`` in ``overrides`` turns the softmax default off. ``"boundary"`` is
    :func:`region_boundary_loss` (GDL + 0.01 * boundary, raised by a schedule).

    Raises:
        medseg.errors.InputError: unknown name (the message lists the valid names), an argument
            the loss does not accept (the message lists the accepted ones), or a bad value.
    """
    kwargs = dict(ENGINE_DEFAULTS)
    if overrides.get("sigmoid") or overrides.get("other_act") is not None:
        kwargs["softmax"] = False
    kwargs.update(overrides)
    return _build(name, kwargs)
