"""Per-case, per-class segmentation metrics in mm: Dice, IoU, HD, HD95, ASSD and normalised surface Dice.

Formulas (``P`` prediction, ``G`` ground truth, ``d(x, S)`` the Euclidean distance in mm from
``x`` to the nearest point of surface ``S``, ``dPG = {d(p, ∂G) : p ∈ ∂P}``, ``dGP`` likewise):

* Dice = 2|P ∩ G| / (|P| + |G|)  (Dice 1945, Ecology 26(3); Sørensen 1948)
* IoU = |P ∩ G| / |P ∪ G|  (Jaccard 1912, New Phytologist 11(2))
* HD = max(max dPG, max dGP)  (Huttenlocher et al. 1993, IEEE TPAMI 15(9), doi:10.1109/34.232073)
* HD95 = the 95th percentile version of HD (``percentile`` is configurable), convention below
* ASSD = average symmetric surface distance, convention below
* NSD@τ = (|{dPG ≤ τ}| + |{dGP ≤ τ}|) / (|∂P| + |∂G|)  (Nikolov et al. 2021, "Clinically
  applicable segmentation of head and neck anatomy for radiotherapy", JMIR 23(7), arXiv:1809.04430)

Convention: the three reference implementations disagree on the surface and on how the
percentile and the mean pool the two directions; ``convention`` picks one and reproduces it:

==================== =========================== ============================================ ==========================================
convention           surface ``∂``               HD95                                         ASSD / NSD
==================== =========================== ============================================ ==========================================
``monai`` (default)  edge voxels, cross erosion  max(pct(dPG), pct(dGP)), linear interpolation mean(dPG ∪ dGP) / edge-voxel counts
``medpy``            edge voxels, cross erosion  pct(dPG ∪ dGP) pooled, linear interpolation  mean(dPG ∪ dGP) / edge-voxel counts
``surface_distance`` surfels on voxel corners,   max over directions of the area-weighted     (area-weighted mean dPG + dGP) / 2 /
                     weighted by patch area      percentile (first surfel whose cumulative    area-weighted NSD (DeepMind's
                                                 area fraction reaches p)                     surface Dice at tolerance)
==================== =========================== ============================================ ==========================================

``monai`` equals ``monai.metrics.compute_hausdorff_distance(percentile=95, spacing=...)``,
``compute_average_surface_distance(symmetric=True)`` and ``compute_surface_dice`` (voxel edges);
``medpy`` equals ``medpy.metric.binary.hd95 / hd / assd(voxelspacing=...)`` (MedPy has no NSD,
edge-voxel NSD is used); ``surface_distance`` equals DeepMind's ``compute_robust_hausdorff``,
``compute_average_surface_distance`` (mean of its two directions) and
``compute_surface_dice_at_tolerance``. Empty masks follow :mod:`medseg.metrics.policy` in every
convention.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medseg.metrics.policy import classify_situation, empty_mask_values, resolve_worst_distance
from medseg.metrics.surface import bounding_box, edge_voxels, nearest_distances, surfels

__all__ = [
    "CONVENTIONS",
    "METRIC_NAMES",
    "ClassMetrics",
    "binary_metrics",
    "compute_metrics",
    "check_spacing",
]

CONVENTIONS: tuple[str, ...] = ("monai", "medpy", "surface_distance")
METRIC_NAMES: tuple[str, ...] = ("dice", "iou", "hd", "hd95", "assd", "nsd")


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one class in one case. Distances in mm; ``None`` where distances were not requested.

    ``situation`` is one of :data:`medseg.metrics.policy.SITUATIONS`; ``worst_distance`` is the
    value the policy used for one-empty distances in this case.
    """

    label: int
    situation: str
    gt_voxels: int
    pred_voxels: int
    dice: float
    iou: float
    hd: float | None
    hd95: float | None
    assd: float | None
    nsd: float | None
    worst_distance: float

    def as_dict(self) -> dict[str, Any]:
        """Plain ``dict`` (JSON/CSV friendly)."""
        return asdict(self)


def check_spacing(spacing: Sequence[float] | float | None, ndim: int) -> tuple[float, ...]:
    """Validate ``spacing`` (mm per voxel along each axis); ``None`` means 1 mm, a number is isotropic."""
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        values = (float(spacing),) * ndim  # type: ignore[arg-type]
    else:
        values = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    if len(values) != ndim:
        raise ValueError(f"spacing must have one value per spatial axis ({ndim}), got {spacing!r}")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing values must be finite and > 0, got {spacing!r}")
    return values


def binary_metrics(
    pred: Any,
    gt: Any,
    spacing: Sequence[float] | float | None = None,
    *,
    convention: str = "monai",
    percentile: float = 95.0,
    nsd_tolerance: float = 1.0,
    worst_distance: float | None = None,
    distances: bool = True,
    label: int = 1,
) -> ClassMetrics:
    """All metrics of one binary mask pair.

    Args:
        pred: array ``(*spatial)``, nonzero = foreground; numpy array or CPU tensor.
        gt: array ``(*spatial)``, same shape as ``pred``.
        spacing: mm per voxel along each spatial axis (``None``: 1 mm).
        convention: ``"monai"``, ``"medpy"`` or ``"surface_distance"`` (see module docstring);
            ``"surface_distance"`` refuses masks that are not 2D or 3D (``ValueError`` naming the
            shape) whether or not a mask is empty, as DeepMind's surface-distance.
        percentile: percentile used for ``hd95``, in [0, 100].
        nsd_tolerance: NSD tolerance τ in mm, >= 0.
        worst_distance: distance reported for a one-empty pair (``None``: image diagonal in mm).
        distances: compute HD/HD95/ASSD/NSD (otherwise they are ``None``).
        label: label recorded in the result.
    """
    p, g = _as_bool(_as_numpy(pred)), _as_bool(_as_numpy(gt))
    _check_pair(p, g)
    options = _Options.make(convention, percentile, nsd_tolerance, distances)
    options.check_shape(p.shape)
    sp = check_spacing(spacing, p.ndim)
    worst = resolve_worst_distance(worst_distance, p.shape, sp)
    return _pair_metrics(p, g, sp, options, worst, label)


def compute_metrics(
    pred: Any,
    gt: Any,
    spacing: Sequence[float] | float | None = None,
    labels: Iterable[int] | None = None,
    *,
    one_hot: bool = False,
    convention: str = "monai",
    percentile: float = 95.0,
    nsd_tolerance: float = 1.0,
    worst_distance: float | None = None,
    distances: bool = True,
) -> dict[int, ClassMetrics]:
    """Per-class metrics of one case, from label maps or one-hot arrays.

    Args:
        pred: label map ``(*spatial)`` of integer labels (0 = background), or with
            ``one_hot=True`` an array ``(C, *spatial)`` whose channel ``k`` is class ``k`` (> 0.5 = in).
        gt: same layout and shape as ``pred``.
        spacing: mm per voxel along each spatial axis (``None``: 1 mm).
        labels: foreground labels to evaluate. ``None``: every nonzero label present in either
            map (label maps), or channels ``1..C-1`` (one-hot). Background 0 is allowed if asked for.
        one_hot: inputs are one-hot ``(C, *spatial)``.
        convention, percentile, nsd_tolerance, worst_distance, distances: see :func:`binary_metrics`.

    Returns:
        ``{label: ClassMetrics}`` in ascending label order.
    """
    p, g = _as_numpy(pred), _as_numpy(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}")
    options = _Options.make(convention, percentile, nsd_tolerance, distances)
    if one_hot:
        if p.ndim < 2:
            raise ValueError(f"one-hot inputs must be (C, *spatial), got shape {p.shape}")
        n_channels = p.shape[0]
        wanted = sorted(set(labels)) if labels is not None else list(range(1, n_channels))
        bad = [k for k in wanted if not 0 <= k < n_channels]
        if bad:
            raise ValueError(f"labels must index the {n_channels} one-hot channels, got {bad}")
        options.check_shape(p.shape[1:])
        sp = check_spacing(spacing, p.ndim - 1)
        worst = resolve_worst_distance(worst_distance, p.shape[1:], sp)
        return {k: _pair_metrics(p[k] > 0.5, g[k] > 0.5, sp, options, worst, k) for k in wanted}
    options.check_shape(p.shape)
    sp = check_spacing(spacing, p.ndim)
    worst = resolve_worst_distance(worst_distance, p.shape, sp)
    box = bounding_box((p != 0) | (g != 0))
    pc = p[box] if box is not None else p[tuple(slice(0, 0) for _ in p.shape)]
    gc = g[box] if box is not None else pc
    if labels is None:
        wanted = sorted(int(v) for v in np.union1d(np.unique(pc), np.unique(gc)) if v != 0)
    else:
        wanted = sorted({int(k) for k in labels})
    return {k: _pair_metrics(pc == k, gc == k, sp, options, worst, k) for k in wanted}


@dataclass(frozen=True)
class _Options:
    convention: str
    percentile: float
    nsd_tolerance: float
    distances: bool

    @classmethod
    def make(cls, convention: str, percentile: float, nsd_tolerance: float, distances: bool) -> _Options:
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {list(CONVENTIONS)}, got {convention!r}")
        if not 0.0 <= float(percentile) <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {percentile!r}")
        if not (math.isfinite(float(nsd_tolerance)) and float(nsd_tolerance) >= 0):
            raise ValueError(f"nsd_tolerance must be a finite distance >= 0 mm, got {nsd_tolerance!r}")
        return cls(convention, float(percentile), float(nsd_tolerance), bool(distances))

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Refuse masks the convention cannot measure (surface_distance: 2D and 3D only), empty or not."""
        if self.distances and self.convention == "surface_distance" and len(shape) not in (2, 3):
            raise ValueError(
                f"the surface_distance convention supports 2D and 3D masks only, got shape {tuple(shape)}"
            )


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_bool(x: np.ndarray) -> np.ndarray:
    return x if x.dtype == np.bool_ else x != 0


def _check_pair(p: np.ndarray, g: np.ndarray) -> None:
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}")
    if p.ndim == 0:
        raise ValueError("pred and gt must have at least one spatial dimension, got scalars")


def _pair_metrics(
    p: np.ndarray, g: np.ndarray, spacing: tuple[float, ...], options: _Options, worst: float, label: int
) -> ClassMetrics:
    box = bounding_box(p | g)
    if box is not None:
        p, g = p[box], g[box]
    n_gt, n_pred = int(np.count_nonzero(g)), int(np.count_nonzero(p))
    situation = classify_situation(n_gt, n_pred)
    if situation != "both_present":
        values = empty_mask_values(situation, worst)
        if not options.distances:
            values.update(hd=None, hd95=None, assd=None, nsd=None)
        return ClassMetrics(label, situation, n_gt, n_pred, worst_distance=worst, **values)
    tp = int(np.count_nonzero(p & g))
    dice = 2.0 * tp / (n_gt + n_pred)
    iou = tp / (n_gt + n_pred - tp)
    hd = hd95 = assd = nsd = None
    if options.distances:
        hd, hd95, assd, nsd = _surface_metrics(np.pad(p, 1), np.pad(g, 1), spacing, options)
    return ClassMetrics(label, situation, n_gt, n_pred, dice, iou, hd, hd95, assd, nsd, worst)


def _surface_metrics(
    p: np.ndarray, g: np.ndarray, spacing: tuple[float, ...], options: _Options
) -> tuple[float, float, float, float]:
    q, tol = options.percentile, options.nsd_tolerance
    if options.convention == "surface_distance":
        table = _area_table(spacing)
        sp_points, sp_area = surfels(p, table)
        sg_points, sg_area = surfels(g, table)
        d_pg = nearest_distances(sp_points, sg_points, spacing)
        d_gp = nearest_distances(sg_points, sp_points, spacing)
        hd = max(float(d_pg.max()), float(d_gp.max()))
        hd95 = max(_weighted_percentile(d_pg, sp_area, q), _weighted_percentile(d_gp, sg_area, q))
        assd = 0.5 * (float(np.sum(d_pg * sp_area) / np.sum(sp_area)) + float(np.sum(d_gp * sg_area) / np.sum(sg_area)))
        total = float(np.sum(sp_area) + np.sum(sg_area))
        nsd = float(np.sum(sp_area[d_pg <= tol]) + np.sum(sg_area[d_gp <= tol])) / total
        return hd, hd95, assd, nsd
    ep, eg = edge_voxels(p), edge_voxels(g)
    d_pg = nearest_distances(ep, eg, spacing)
    d_gp = nearest_distances(eg, ep, spacing)
    both = np.concatenate([d_pg, d_gp])
    hd = float(both.max())
    if options.convention == "monai":
        hd95 = max(float(np.percentile(d_pg, q)), float(np.percentile(d_gp, q)))
    else:  # medpy: one percentile of the pooled distances of both directions
        hd95 = float(np.percentile(both, q))
    assd = float(both.mean())
    nsd = float(np.count_nonzero(both <= tol)) / both.size
    return hd, hd95, assd, nsd


def _weighted_percentile(distances: np.ndarray, areas: np.ndarray, q: float) -> float:
    """surface-distance's robust percentile: first sorted distance whose cumulative area fraction reaches q%."""
    order = np.argsort(distances, kind="stable")
    cumulative = np.cumsum(areas[order]) / np.sum(areas)
    idx = min(int(np.searchsorted(cumulative, q / 100.0)), distances.size - 1)
    return float(distances[order][idx])


@functools.lru_cache(maxsize=64)
def _area_table(spacing: tuple[float, ...]) -> np.ndarray:
    from monai.metrics.utils import get_code_to_measure_table

    table, _ = get_code_to_measure_table(spacing)
    return np.asarray(table.cpu().numpy(), dtype=np.float64)
