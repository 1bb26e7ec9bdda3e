"""Cheap validation every epoch, full validation when it counts.

- :class:`PseudoDice`: nnU-Net's online "pseudo Dice": a fixed set of validation patches (drawn once,
  with a fixed seed and the plan's class ratios, from the validation volumes), predicted each epoch
  (planned count: :data:`PSEUDO_FRACTION` of the training patches of an epoch, at least one per case;
  a forward pass in eval mode costs about half a training step per patch on the CPU, so this is about
  5% of the epoch, 6% measured on the demo with 2 cores; nnU-Net's fifth, sized for a GPU, measured 12%);
  true positives, false positives and false negatives are summed per class over all patches, then
  ``Dice_c = 2 TP / (2 TP + FP + FN)`` (classes with none of the three are left out of the mean).
  Metric names: ``val_pseudo_dice`` (mean over foreground classes or regions) and
  ``val_pseudo_dice_<name>``.
- :class:`ValidationSchedule`: when the full sliding-window validation (``val_mean_dice``,
  ``val_dice_<name>``, ... as before) runs: always at the last epoch; with an explicit interval every
  ``interval`` epochs; otherwise (planned) every ``period = ceil(epochs / 10)`` epochs and, from the
  first period on, whenever the exponential moving average of the pseudo Dice (weight 0.1 on the new
  value, as nnU-Net's best-checkpoint EMA) reaches a new best, in both cases only while validation
  (pseudo and full) has cost at most ``budget`` of the training time so far. The first full validation,
  whose cost is not known yet, runs at the first period (not after the first epoch, when the network is
  still close to random: spending the budget there starved the rest of the run). The kept best
  checkpoint is chosen on the full validation's mean Dice only, so it is a full-volume choice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

__all__ = ["PseudoDice", "ValidationSchedule", "EpochValidation", "planned_patches", "PSEUDO_KEY",
           "PLANNED_VALIDATIONS", "PSEUDO_FRACTION"]

PSEUDO_KEY = "pseudo_dice"
PLANNED_VALIDATIONS = 10  # periodic full validations of a planned schedule, at most (the budget permitting)
PSEUDO_FRACTION = 0.1  # pseudo-Dice patches per epoch, as a fraction of the training patches of an epoch


def planned_patches(train_patches: int, val_cases: int) -> int:
    """Pseudo-Dice patches per validation case: :data:`PSEUDO_FRACTION` of an epoch's training patches, >= 1."""
    return max(1, round(PSEUDO_FRACTION * train_patches / max(val_cases, 1)))


class PseudoDice:
    """Pseudo Dice on fixed validation patches (see the module docstring).

    Args:
        volumes: ``{"image": (1, C, *spatial), "label": (1, 1 or R, *spatial)}`` batches (the validation loader).
        patch_size: the plan's patch (x, y, z).
        class_ratios: the plan's sampling ratios (patch centres by class, as in training).
        names: ``{channel: name}`` of the reported outputs (foreground classes, or every region).
        regions: region outputs (sigmoid > 0.5 per channel) instead of an argmax over classes.
        patches_per_case: patches drawn from each volume.
        seed: the draw's seed (the same patches every epoch and every run with that seed).
    """

    def __init__(self, volumes: Iterable[Mapping[str, Any]], patch_size: tuple[int, ...], class_ratios: tuple[float, ...],
                 names: Mapping[int, str], regions: bool = False, patches_per_case: int = 4, seed: int = 0) -> None:
        import numpy as np
        from monai import transforms as mt

        self.names, self.regions = dict(names), regions
        pad = mt.SpatialPadd(keys=["image", "label"], spatial_size=list(patch_size))
        rng = np.random.RandomState(seed)
        images, labels = [], []
        for batch in volumes:
            item = pad({"image": torch.as_tensor(batch["image"][0]), "label": torch.as_tensor(batch["label"][0])})
            ratios = list(class_ratios)
            if regions:  # sample on a class index derived from the region channels, keep the channels
                item = {"image": item["image"], "label": _region_index(item["label"]), "regions": item["label"]}
                ratios = [1.0] * (int(item["regions"].shape[0]) + 1)
            crop = mt.RandCropByLabelClassesd(keys=list(item), label_key="label", spatial_size=list(patch_size),
                                              ratios=ratios, num_classes=len(ratios), num_samples=patches_per_case,
                                              warn=False)
            crop.set_random_state(state=rng)
            for patch in crop(item):
                images.append(torch.as_tensor(patch["image"]).float().clone())
                labels.append(torch.as_tensor(patch["regions" if regions else "label"]).clone())
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def counts(self, network: torch.nn.Module, device: torch.device, amp: bool = False,
               batch_size: int = 4) -> torch.Tensor:
        """``(3, K)`` float64 sums of TP, FP, FN per reported output over all patches."""
        keys = sorted(self.names)
        out = torch.zeros(3, len(keys), dtype=torch.float64)
        was_training = network.training
        network.eval()
        try:
            for i in range(0, len(self.images), batch_size):
                x = torch.stack(self.images[i:i + batch_size]).to(device)
                with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                    logits = network(x)
                if isinstance(logits, (list, tuple)):
                    logits = logits[0]
                pred, truth = self._masks(logits.float().cpu(), torch.stack(self.labels[i:i + batch_size]), keys)
                out[0] += (pred & truth).sum(dim=(0, 2, 3, 4)).double()
                out[1] += (pred & ~truth).sum(dim=(0, 2, 3, 4)).double()
                out[2] += (~pred & truth).sum(dim=(0, 2, 3, 4)).double()
        finally:
            network.train(was_training)
        return out

    def _masks(self, logits: torch.Tensor, label: torch.Tensor, keys: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.regions:
            return logits[:, keys] > 0, label[:, keys] > 0.5
        arg = logits.argmax(dim=1)
        lab = label[:, 0].round().long()
        return (torch.stack([arg == k for k in keys], dim=1), torch.stack([lab == k for k in keys], dim=1))

    def metrics(self, counts: torch.Tensor) -> dict[str, float]:
        """``{"pseudo_dice": mean, "pseudo_dice_<name>": ...}`` from :meth:`counts` (all ranks' sums)."""
        tp, fp, fn = counts
        denom = 2 * tp + fp + fn
        out: dict[str, float] = {}
        values = []
        for j, k in enumerate(sorted(self.names)):
            if denom[j] > 0:
                dice = float(2 * tp[j] / denom[j])
                values.append(dice)
                out[f"{PSEUDO_KEY}_{_safe(self.names[k])}"] = dice
        out[PSEUDO_KEY] = sum(values) / len(values) if values else 0.0
        return out


def _region_index(regions: torch.Tensor) -> torch.Tensor:
    """A class index for sampling from region channels ``(R, *spatial)``: the last region a voxel belongs to."""
    index = torch.zeros_like(regions[:1])
    for r in range(regions.shape[0]):
        index[0][regions[r] > 0.5] = r + 1
    return index


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name).strip()) or "unnamed"


class ValidationSchedule:
    """Decides after each epoch whether the full validation runs (rules in the module docstring).

    Args:
        epochs: the run's last epoch.
        interval: explicit interval (every ``interval`` epochs and the last), or ``None`` for the planned schedule.
        budget: planned schedule: the most full validation may cost, as a fraction of the training time.
    """

    def __init__(self, epochs: int, interval: int | None = None, budget: float = 0.2) -> None:
        self.epochs, self.interval, self.budget = int(epochs), interval, float(budget)
        self.period = max(1, math.ceil(self.epochs / PLANNED_VALIDATIONS))
        self.ema: float | None = None
        self.best_ema = -math.inf
        self.last_full = 0
        self.train_s = self.val_s = 0.0
        self.full_s: float | None = None

    def update(self, epoch: int, pseudo_dice: float, train_s: float, pseudo_s: float = 0.0) -> bool:
        """Record the epoch's training and pseudo-validation time and pseudo Dice; ``True``: run the full validation."""
        self.train_s += train_s
        self.val_s += pseudo_s
        self.ema = pseudo_dice if self.ema is None else 0.9 * self.ema + 0.1 * pseudo_dice
        improved = self.ema > self.best_ema + 1e-9
        self.best_ema = max(self.best_ema, self.ema)
        if epoch >= self.epochs:
            return True
        if self.interval is not None:
            return epoch % self.interval == 0
        due = epoch - self.last_full >= self.period or (improved and epoch >= self.period)
        affordable = self.full_s is None or self.val_s + self.full_s <= self.budget * self.train_s
        return due and affordable

    def ran_full(self, epoch: int, seconds: float) -> None:
        self.last_full, self.full_s = epoch, seconds
        self.val_s += seconds

    @property
    def share(self) -> float:
        """Validation time (pseudo and full) over training time so far."""
        return self.val_s / self.train_s if self.train_s > 0 else 0.0


class EpochValidation:
    """What runs after each training epoch: the pseudo Dice, then the full validation if the schedule says so.

    ``attach(trainer)`` times each epoch's training; ``after_epoch(epoch)`` returns ``(full, record)``:
    whether the full validation ran and the metrics to log (``val_pseudo_dice*``, the evaluator's ``val_*``
    when it ran, ``val_time_share``: validation over training time so far). In a multi-process run the
    patch counts are summed over ranks and rank 0's decision is broadcast, so every rank validates together.
    """

    def __init__(self, evaluator: Any, plan: Any, interval: int | None, budget: float, epochs: int,
                 patches_per_case: int | None = None, seed: int = 0) -> None:
        spec = plan.label_spec
        shift = 1 if spec.is_regions else 0
        self.names = {k - shift: v for k, v in spec.names.items() if k > 0}
        self.evaluator, self.plan = evaluator, plan
        self.patches_per_case, self.seed = patches_per_case, seed
        self.schedule = ValidationSchedule(epochs, interval, budget)
        self.pseudo: PseudoDice | None = None
        self._t0 = 0.0

    def attach(self, trainer: Any) -> EpochValidation:
        import time

        from ignite.engine import Events

        def started(_: Any) -> None:
            self._t0 = time.perf_counter()

        trainer.add_event_handler(Events.EPOCH_STARTED, started)
        if self.patches_per_case is None:
            per_epoch = len(trainer.data_loader) * self.plan.batch_size * self.plan.samples_per_case
            self.patches_per_case = planned_patches(per_epoch, len(self.evaluator.data_loader))
        return self

    def after_epoch(self, epoch: int) -> tuple[bool, dict[str, float]]:
        import time

        from medseg.utils.rundir import VAL_PREFIX

        t0 = time.perf_counter()
        train_s = t0 - self._t0
        ev = self.evaluator
        if self.pseudo is None:
            self.pseudo = PseudoDice(ev.data_loader, self.plan.patch_size, self.plan.class_ratios, self.names,
                                     self.plan.label_spec.is_regions, self.patches_per_case, self.seed)
        counts = _all_reduce(self.pseudo.counts(ev.network, ev.state.device or torch.device("cpu"), ev.amp))
        record = {f"{VAL_PREFIX}{k}": v for k, v in self.pseudo.metrics(counts).items()}
        full = _broadcast(self.schedule.update(epoch, record[f"{VAL_PREFIX}{PSEUDO_KEY}"], train_s,
                                               time.perf_counter() - t0))
        if full:
            t1 = time.perf_counter()
            ev.run(epoch)
            self.schedule.ran_full(epoch, time.perf_counter() - t1)
            record.update({f"{VAL_PREFIX}{k}": float(v) for k, v in ev.state.metrics.items()
                           if isinstance(v, (int, float))})
        record[f"{VAL_PREFIX}time_share"] = self.schedule.share
        return full, record


def _all_reduce(counts: torch.Tensor) -> torch.Tensor:
    import ignite.distributed as idist

    return idist.all_reduce(counts) if idist.get_world_size() > 1 else counts


def _broadcast(flag: bool) -> bool:
    import ignite.distributed as idist

    if idist.get_world_size() <= 1:
        return flag
    return bool(idist.broadcast(torch.tensor([int(flag)]), src=0).item())
