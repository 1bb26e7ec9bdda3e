"""Ignite handlers that change the weights of a :class:`medseg.losses.WeightedSumLoss` during training.

:class:`LossWeightSchedule` applies any ``epoch -> {term: weight}`` function at the start of
every epoch; :class:`BoundaryLossSchedule` is the boundary-loss rebalancing of Kervadec et al.
(2019). Weights are a pure function of the epoch number, so a resumed run gets the same weights
as an uninterrupted one. Both can be built from a MONAI bundle config::

    handlers:
      - _target_: medseg.handlers.loss_schedule.BoundaryLossSchedule
        step: 0.01
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from ignite.engine import Engine, Events
from torch import nn

from medseg.losses.compound import WeightedSumLoss

__all__ = ["BoundaryLossSchedule", "LossWeightSchedule", "boundary_weights", "find_weighted_sum", "schedule_for"]

logger = logging.getLogger(__name__)


def find_weighted_sum(module: nn.Module) -> WeightedSumLoss:
    """The first :class:`WeightedSumLoss` in ``module`` (itself, or inside a wrapper such as deep supervision)."""
    for m in module.modules():
        if isinstance(m, WeightedSumLoss):
            return m
    raise ValueError(f"no WeightedSumLoss found in loss {type(module).__name__}; the schedule needs one")


def boundary_weights(
    epoch: int,
    start: float = 0.01,
    step: float = 0.01,
    rebalance: bool = True,
    max_boundary: float = 1.0,
    min_region: float = 0.01,
) -> dict[str, float]:
    """Weights ``{"region", "boundary"}`` after ``epoch`` completed epochs (0-based).

    ``boundary = min(start + step * epoch, max_boundary)``; with ``rebalance`` the region weight
    is ``max(1 - step * epoch, min_region)`` (weight moves from the region term to the boundary
    term), else it stays 1 (the boundary term is only increased).
    """
    boundary = min(start + step * epoch, max_boundary)
    region = max(1.0 - step * epoch, min_region) if rebalance else 1.0
    return {"region": region, "boundary": boundary}


class LossWeightSchedule:
    """Set the term weights of a :class:`WeightedSumLoss` from ``schedule(epoch)`` at every epoch start.

    Args:
        schedule: ``epoch -> {term: weight}``, ``epoch`` = number of completed epochs (0 first).
        loss: the loss (or a wrapper containing it); None takes ``engine.loss_function`` at
            :meth:`attach` (MONAI's ``SupervisedTrainer``).
    """

    def __init__(self, schedule: Callable[[int], Mapping[str, float]], loss: nn.Module | None = None) -> None:
        if not callable(schedule):
            raise ValueError(f"schedule must be a callable epoch -> weights, got {schedule!r}")
        self.schedule = schedule
        self.loss = None if loss is None else find_weighted_sum(loss)

    def attach(self, engine: Engine) -> None:
        """Register on ``engine`` (``EPOCH_STARTED``); resolves the loss if not given."""
        if self.loss is None:
            loss = getattr(engine, "loss_function", None)
            if not isinstance(loss, nn.Module):
                raise ValueError("LossWeightSchedule needs loss=... or an engine with a loss_function module")
            self.loss = find_weighted_sum(loss)
        find_weighted_sum(self.loss).set_weights(self.schedule(0))  # validate term names now
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Apply the weights of the epoch that is starting."""
        assert self.loss is not None
        weights = dict(self.schedule(max(int(engine.state.epoch) - 1, 0)))
        self.loss.set_weights(weights)
        logger.debug("epoch %d loss weights %s", engine.state.epoch, weights)


class BoundaryLossSchedule(LossWeightSchedule):
    """Kervadec et al. (2019) schedule: shift weight from the region term to the boundary term each epoch.

    The loss must have terms ``"region"`` and ``"boundary"`` (as built by
    :func:`medseg.losses.region_boundary_loss`, the ``boundary`` loss of ``medseg train``).
    Epoch ``e`` (0-based) gets ``boundary = min(start + step * e, max_boundary)`` and, with
    ``rebalance`` (default), ``region = max(1 - step * e, min_region)``; without it the region
    weight stays 1 (the "increase" variant).

    Reference: Kervadec H. et al. (2019) Boundary loss for highly unbalanced segmentation.
    MIDL 2019. arXiv:1812.07032 (alpha starts at 0.01 and grows by 0.01 per epoch).

    Args:
        start: boundary weight of the first epoch, >= 0.
        step: change per epoch, >= 0.
        rebalance: also decrease the region weight.
        max_boundary: upper bound of the boundary weight, >= start.
        min_region: lower bound of the region weight, in [0, 1].
        loss: as :class:`LossWeightSchedule`.
    """

    def __init__(
        self,
        start: float = 0.01,
        step: float = 0.01,
        rebalance: bool = True,
        max_boundary: float = 1.0,
        min_region: float = 0.01,
        loss: nn.Module | None = None,
    ) -> None:
        for name, value in (("start", start), ("step", step), ("max_boundary", max_boundary)):
            if not float(value) >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if float(max_boundary) < float(start):
            raise ValueError(f"max_boundary must be >= start ({start!r}), got {max_boundary!r}")
        if not 0.0 <= float(min_region) <= 1.0:
            raise ValueError(f"min_region must be in [0, 1], got {min_region!r}")
        self.start, self.step, self.rebalance = float(start), float(step), bool(rebalance)
        self.max_boundary, self.min_region = float(max_boundary), float(min_region)
        super().__init__(self.weights_at, loss)

    def weights_at(self, epoch: int) -> dict[str, float]:
        """Weights for ``epoch`` completed epochs (see :func:`boundary_weights`)."""
        return boundary_weights(epoch, self.start, self.step, self.rebalance, self.max_boundary, self.min_region)


def schedule_for(loss: nn.Module) -> BoundaryLossSchedule | None:
    """The schedule a loss asks for: Kervadec's rebalancing for a weighted sum with ``region`` and
    ``boundary`` terms (the contract of :class:`BoundaryLossSchedule`), else None."""
    for module in loss.modules():
        if isinstance(module, WeightedSumLoss) and {"region", "boundary"} <= set(module.weights):
            return BoundaryLossSchedule(loss=loss)
    return None
