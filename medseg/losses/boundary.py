"""Boundary loss (Kervadec et al. 2019) on precomputed signed distance maps, and boundary-aware Dice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medseg.losses.base import PreparedInputs, SegLoss, activate, check_choice, check_range, reduce_loss
from medseg.losses.dice import DiceLoss
from medseg.transforms.distance import mask_signed_distance, signed_distance_map, spacing_of

__all__ = ["BoundaryDiceLoss", "BoundaryLoss", "distance_map_from_target", "soft_boundary"]


def distance_map_from_target(
    prep: PreparedInputs, spacing: Sequence[float] | float | None = None
) -> torch.Tensor:
    """``(B, C, *spatial)`` float signed distance maps of a prepared target (slow: CPU EDT per sample).

    Uses :func:`medseg.transforms.distance.signed_distance_map`, the same convention as the
    data-pipeline transform; a dense target is binarised at 0.5 per channel.
    """
    shape = prep.probs.shape
    c, spatial = shape[1], tuple(shape[2:])
    maps = []
    for b in range(shape[0]):
        if prep.labels is not None:
            lab = prep.labels[b].reshape(1, *spatial).cpu().numpy()
            maps.append(signed_distance_map(lab, c, spacing))
        else:
            dense = prep.dense[b].detach().cpu().numpy() > 0.5  # type: ignore[index]
            maps.append(np.stack([mask_signed_distance(dense[k], spacing) for k in range(c)]))
    return torch.from_numpy(np.stack(maps)).to(device=prep.probs.device, dtype=prep.probs.dtype)


class BoundaryLoss(SegLoss):
    """Boundary loss: mean over voxels of the class probability times the ground-truth signed distance.

    Formula: ``L_c = (1/N) sum_q s_c(q) * phi_c(q)``, ``s_c`` the predicted probability of class
    ``c``, ``phi_c`` its signed distance map (negative inside, positive outside; mm).

    The original paper:
        Kervadec H., Bouchtiba J., Desrosiers C., Granger E., Dolz J., Ben Ayed I. (2019)
        Boundary loss for highly unbalanced segmentation. MIDL 2019. arXiv:1812.07032.

    The loss is not bounded below by 0 (its minimum, reached by the ground truth, is the negative
    mean inner distance), so it is used next to a region loss, with its weight raised during
    training: see :func:`medseg.losses.registry.region_boundary_loss` and
    :class:`medseg.handlers.loss_schedule.BoundaryLossSchedule`.

    Convention: ``distance_map`` comes from :class:`medseg.transforms.SignedDistanceMapd` (see
    :mod:`medseg.transforms.distance`: spacing-aware, ``-d`` inside, ``+d`` outside, zeros for
    empty/full classes). ``monai.losses.BoundaryLoss`` recomputes its maps from the target every
    step, in voxel units with ``-(d - 1)`` inside. ``include_background`` defaults to False as in
    the paper (foreground classes only). ``batch=True`` averages over the batch (``(1, C')``).

    Args:
        spacing: voxel spacing (mm) for the on-the-fly mode when the target is not a MetaTensor.
        Other arguments: see :class:`medseg.losses.base.SegLoss`.
    """

    uses_distance_map = True
    smoothed = False

    def __init__(
        self, *, include_background: bool = False, spacing: Sequence[float] | float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(include_background=include_background, **kwargs)
        self.spacing = spacing

    def per_class(
        self, input: torch.Tensor, target: torch.Tensor | None, distance_map: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, C')`` (``(1, C')`` if ``batch``) boundary terms before the reduction."""
        if distance_map is None:
            if target is None:
                raise ValueError("BoundaryLoss needs a target or a distance_map, got neither")
            prep = self.prepare(input, target)
            spacing = spacing_of(target, input.ndim - 2) or self.spacing
            distance_map = distance_map_from_target(prep, spacing)
            probs, first = prep.probs, prep.first
        else:
            if distance_map.shape != input.shape:
                raise ValueError(
                    f"distance_map must be (B, C, *spatial) like input: input {tuple(input.shape)}, "
                    f"distance_map {tuple(distance_map.shape)} (one channel per class, background included)"
                )
            probs = activate(input, self.sigmoid, self.softmax, self.other_act)
            first = 1 if (not self.include_background and input.shape[1] > 1) else 0
        # one elementwise product over every channel, then the kept classes: no strided copies of
        # the sliced probabilities or maps (about 1.5x faster than a contraction of the slices)
        with torch.autocast(device_type=probs.device.type, enabled=False):
            f = (probs * distance_map.to(probs.dtype)).flatten(2).mean(-1)[:, first:]
        return f.mean(0, keepdim=True) if self.batch else f

    def forward(
        self, input: torch.Tensor, target: torch.Tensor | None = None, distance_map: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:meth:`SegLoss.forward` with the cached signed distance maps.

        ``distance_map``: ``(B, C, *spatial)`` float signed distance maps, one channel per class in
        the order of the one-hot target (background included). ``target`` is only read when it is
        None (on-the-fly mode: a CPU EDT per sample and class, slow).
        """
        return reduce_loss(self.per_class(input, target, distance_map), self.reduction)


def soft_boundary(x: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Soft morphological gradient ``dilate(x) - erode(x)`` of ``(B, C, *spatial)`` maps in [0, 1].

    Dilation is a max-pool and erosion ``-maxpool(-x)`` over a ``kernel_size`` cube (stride 1,
    same size); it is 1 on the two voxel layers around a hard edge, 0 far from edges, and
    differentiable (sub-gradient of max) for soft maps. The image border is not an edge.
    """
    nd = x.ndim - 2
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}.get(nd)
    if pool is None:
        raise ValueError(f"soft_boundary supports 1 to 3 spatial dims, got shape {tuple(x.shape)}")
    pad = kernel_size // 2
    return pool(x, kernel_size, 1, pad) + pool(-x, kernel_size, 1, pad)


class BoundaryDiceLoss(DiceLoss):
    """Boundary-aware Dice: Dice loss plus ``lambda_edge`` times an L1/L2 error between soft boundaries.

    Formula: ``L_c = Dice_c + lambda * (1/N) sum_q |B(p_c)(q) - B(g_c)(q)|^k``, ``B`` the soft
    morphological gradient :func:`soft_boundary`, ``k = 1`` (``"l1"``) or ``2`` (``"l2"``).

    References: soft Dice per :class:`DiceLoss` (Milletari et al. 2016); soft morphology by
    max-pooling as in Shit S. et al. (2021) clDice. CVPR 2021. arXiv:2003.07311. This is a
    Dice + edge-term combination, not a single published loss.

    Convention: the edge term is computed on the same channels as the Dice term
    (``include_background``) and pooled like it (``batch``). Label-index targets are expanded
    to one-hot for the morphological gradient (this loss is not memory-optimised).

    Args:
        lambda_edge: weight of the edge term, >= 0.
        edge_norm: ``"l1"`` or ``"l2"``.
        kernel_size: odd structuring-element size, >= 3.
        Other arguments: see :class:`DiceLoss` (``weight`` scales the Dice term only).
    """

    def __init__(
        self, *, lambda_edge: float = 1.0, edge_norm: str = "l1", kernel_size: int = 3, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.lambda_edge = check_range("lambda_edge", lambda_edge, 0.0)
        self.edge_norm = check_choice("edge_norm", edge_norm, ("l1", "l2"))
        if isinstance(kernel_size, bool) or int(kernel_size) != kernel_size or kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size!r}")
        self.kernel_size = int(kernel_size)

    def edge_term(self, prep: PreparedInputs) -> torch.Tensor:
        """``(B, C')`` (``(1, C')`` if ``batch``) mean boundary error per class of prepared inputs."""
        p, g = prep.probs[:, prep.first :], prep.dense_target()[:, prep.first :]
        diff = (soft_boundary(p, self.kernel_size) - soft_boundary(g, self.kernel_size)).flatten(2)
        err = diff.abs() if self.edge_norm == "l1" else diff.square()
        return err.mean(-1).mean(0, keepdim=True) if self.batch else err.mean(-1)

    def per_class(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(B, C')`` Dice + edge terms before the reduction."""
        prep = self.prepare(input, target)
        f = self.dice_terms(prep)
        if self.lambda_edge == 0.0:
            return f
        return f + self.lambda_edge * self.edge_term(prep)
