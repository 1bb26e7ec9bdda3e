"""Cheap validation: the pseudo Dice on fixed patches and the schedule of the full validation."""

from __future__ import annotations

import pytest
import torch

from medseg.training.validation import PseudoDice, ValidationSchedule


class _Oracle(torch.nn.Module):
    """Logits that reproduce the input image's class index (the image is the label itself)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lab = x[:, 0].round().long()
        return torch.nn.functional.one_hot(lab, 3).permute(0, 4, 1, 2, 3).float()


def _volumes(n: int = 2) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(n):
        label = torch.zeros(1, 1, 20, 20, 10)
        label[0, 0, 3:12, 4:15, 2:8] = 1
        label[0, 0, 12 + i:16 + i, 5:9, 3:6] = 2
        out.append({"image": label.clone(), "label": label})
    return out


def test_pseudo_dice_is_one_for_a_perfect_network_and_patches_are_fixed():
    a = PseudoDice(_volumes(), (8, 8, 8), (1.0, 1.0, 1.0), {1: "organ", 2: "lesion"}, patches_per_case=3, seed=5)
    b = PseudoDice(_volumes(), (8, 8, 8), (1.0, 1.0, 1.0), {1: "organ", 2: "lesion"}, patches_per_case=3, seed=5)
    assert len(a) == 6 and all(torch.equal(x, y) for x, y in zip(a.images, b.images, strict=True))
    metrics = a.metrics(a.counts(_Oracle(), torch.device("cpu")))
    assert metrics == {"pseudo_dice": 1.0, "pseudo_dice_organ": 1.0, "pseudo_dice_lesion": 1.0}


def test_pseudo_dice_sums_counts_over_patches_before_dividing():
    # organ: TP 2, FP 2, FN 0 -> 4/6; lesion: TP 0, FP 0, FN 0 -> left out of the mean
    pd = PseudoDice([], (8, 8, 8), (1.0, 1.0, 1.0), {1: "organ", 2: "lesion"})
    counts = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    assert pd.metrics(counts) == {"pseudo_dice_organ": pytest.approx(2 / 3), "pseudo_dice": pytest.approx(2 / 3)}


def test_explicit_interval_validates_every_n_epochs_and_the_last():
    s = ValidationSchedule(epochs=7, interval=3)
    assert [s.update(e, 0.5, 1.0) for e in range(1, 8)] == [False, False, True, False, False, True, True]


def test_planned_schedule_runs_on_a_new_best_within_the_budget():
    s = ValidationSchedule(epochs=100, interval=None, budget=0.2)  # period: 10 epochs
    for e in range(1, 10):  # new bests every epoch, but the first period is a warm-up: no full validation
        assert not s.update(e, 0.05 * e, train_s=10.0)
    assert s.update(10, 0.5, train_s=10.0)  # the first period: it runs, its cost is not known yet
    s.ran_full(10, seconds=15.0)  # a full validation costs 1.5 epochs
    for e in range(11, 15):  # new bests, but 15 + 15 > 0.2 * 110 ... 0.2 * 140
        assert not s.update(e, 0.05 * e, train_s=10.0)
    assert s.update(15, 0.75, train_s=10.0)  # 30 <= 0.2 * 150: affordable again
    s.ran_full(15, seconds=15.0)
    assert not s.update(16, 0.0, train_s=10.0)  # no new best (the average fell), not yet due
    assert s.update(100, 0.0, train_s=10.0)  # the last epoch always
    assert s.share == pytest.approx(30.0 / 170.0)


def test_planned_schedule_is_due_every_tenth_of_the_run():
    s = ValidationSchedule(epochs=20, interval=None, budget=1.0)
    runs = []
    for e in range(1, 21):  # a constant pseudo Dice: no new best after the first epoch
        if s.update(e, 0.5, 1.0):
            s.ran_full(e, 0.01)
            runs.append(e)
    assert runs == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]  # every ceil(20 / 10) = 2 epochs, the last among them


def test_a_run_logs_the_pseudo_dice_every_epoch_and_keeps_the_full_names(tiny_run):
    import mlflow

    from medseg.utils.rundir import best_record, read_journal

    journal = read_journal(tiny_run.run_dir)
    assert all({"val_pseudo_dice", "val_time_share"} <= set(r["metrics"]) for r in journal)
    assert "val_mean_dice" in journal[-1]["metrics"]  # the last epoch is always validated in full
    best = best_record(tiny_run.run_dir)
    assert best is not None and tiny_run.best_metric == pytest.approx(best["metrics"]["val_mean_dice"])
    run = mlflow.MlflowClient(tiny_run.tracking_uri).get_run(tiny_run.mlflow_run_id)
    assert run.data.params["aug.rotation.prob"] == "0.2" and "aug.noise.std_max" in run.data.params
    assert "val_pseudo_dice" in run.data.metrics and "val_mean_dice" in run.data.metrics


@pytest.mark.parametrize(("train_patches", "val_cases", "expected"), [
    (40, 5, 1),  # the demo: 10 iterations x 2 x 2 patches; a tenth is 4, 0.8 per case -> 1
    (400, 100, 1),  # many validation cases: at least one each
    (1000, 4, 25),
])
def test_planned_pseudo_patches_are_a_tenth_of_an_epochs_training_patches(train_patches, val_cases, expected):
    from medseg.training.validation import planned_patches

    assert planned_patches(train_patches, val_cases) == expected
