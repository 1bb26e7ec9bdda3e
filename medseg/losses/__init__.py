"""Segmentation losses as MONAI components (``_target_: medseg.losses.<Class>``).

Every loss follows MONAI's argument conventions, shares one input preparation and one reduction
contract (:mod:`medseg.losses.base`: ``reduction="none"`` returns ``(B, C')``), and is registered
by name in :data:`LOSSES`; :func:`create_loss` builds one for the training engine.
"""

from __future__ import annotations

from medseg.losses.base import SegLoss
from medseg.losses.boundary import BoundaryDiceLoss, BoundaryLoss
from medseg.losses.compound import DiceCELoss, DiceFocalLoss, WeightedSumLoss
from medseg.losses.cross_entropy import CrossEntropyLoss
from medseg.losses.deep_supervision import DeepSupervisionLoss
from medseg.losses.dice import DiceLoss, GeneralizedDiceLoss
from medseg.losses.registry import (
    ENGINE_DEFAULTS,
    LOSSES,
    create_loss,
    deep_supervision_loss,
    region_boundary_loss,
    weighted_sum_loss,
)
from medseg.losses.tversky import FocalTverskyLoss, TverskyLoss

__all__ = [
    "ENGINE_DEFAULTS",
    "LOSSES",
    "BoundaryDiceLoss",
    "BoundaryLoss",
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceFocalLoss",
    "DiceLoss",
    "FocalTverskyLoss",
    "GeneralizedDiceLoss",
    "SegLoss",
    "TverskyLoss",
    "WeightedSumLoss",
    "create_loss",
    "deep_supervision_loss",
    "region_boundary_loss",
    "weighted_sum_loss",
]
