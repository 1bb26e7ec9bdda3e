"""The plan's augmentation section: rules from spacing, patch and modality; overrides; serialisation."""

from __future__ import annotations

import math

import pytest

from medseg.errors import InputError
from medseg.plan.augmentation import (
    apply_overrides,
    augmentation_of,
    flatten,
    parse_overrides,
    plan_augmentation,
    read_box,
)
from medseg.plan.planner import ChannelNorm


def test_isotropic_data_rotate_30_degrees_about_every_axis():
    aug = plan_augmentation((1.0, 1.0, 1.0), (64, 64, 64), {0: "T1"})
    assert not aug["dummy_2d"]
    assert aug["rotation"]["range_rad"] == [[pytest.approx(-math.pi / 6), pytest.approx(math.pi / 6)]] * 3


def test_a_flat_patch_on_anisotropic_data_is_augmented_in_2d():
    # 96 / 24 = 4 > 3 along the coarse z axis (nnU-Net's dummy 2D)
    aug = plan_augmentation((0.8, 0.8, 2.5), (96, 96, 24), {0: "CT"})
    assert aug["dummy_2d"] and aug["coarse_axis"] == 2
    assert aug["rotation"]["range_rad"][:2] == [[0.0, 0.0], [0.0, 0.0]]
    assert aug["rotation"]["range_rad"][2][1] == pytest.approx(math.pi)
    assert aug["scale"]["axes"] == [0, 1] == aug["low_resolution"]["axes"]


def test_anisotropic_spacing_with_a_deep_patch_stays_3d():
    assert not plan_augmentation((0.8, 0.8, 2.5), (64, 64, 32), {0: "CT"})["dummy_2d"]  # 64 / 32 = 2


def test_ct_offset_and_noise_are_planned_in_hounsfield_units():
    aug = plan_augmentation((1, 1, 1), (32, 32, 32), {0: "CT"}, [ChannelNorm("ct", -100, 200, 100.0, 25.0)])
    assert aug["offset"]["range"] == [-2.4, 2.4]  # 60 HU / 25 HU per unit
    assert aug["noise"]["std_max"] == 2.0  # 50 HU / 25
    assert aug["bias_field"]["prob"] == 0.0


def test_ct_augmentation_ends_with_the_normalisation_window_and_mri_has_none():
    aug = plan_augmentation((1, 1, 1), (32, 32, 32), {0: "CT"}, [ChannelNorm("ct", -100, 200, 100.0, 25.0)])
    assert aug["clip"] == {"prob": 1.0, "windows": [[-8.0, 4.0]]}  # (-100 - 100) / 25, (200 - 100) / 25
    mr = plan_augmentation((1, 1, 1), (32, 32, 32), {0: "T1"}, [ChannelNorm("zscore")])
    assert mr["clip"]["prob"] == 0.0


def test_gamma_is_for_mri_only():
    ct = plan_augmentation((1, 1, 1), (32, 32, 32), {0: "CT"}, [ChannelNorm("ct", -100, 200, 100.0, 25.0)])
    mr = plan_augmentation((1, 1, 1), (32, 32, 32), {0: "T1"}, [ChannelNorm("zscore")])
    assert ct["gamma"]["prob"] == ct["gamma_inverted"]["prob"] == 0.0
    assert (mr["gamma"]["prob"], mr["gamma_inverted"]["prob"]) == (0.3, 0.1)  # nnU-Net's


def test_mri_gets_a_bias_field_and_no_offset():
    aug = plan_augmentation((1, 1, 1), (32, 32, 32), {0: "T1", 1: "T2"}, [ChannelNorm("zscore")] * 2)
    assert aug["bias_field"]["prob"] > 0 and aug["offset"]["prob"] == 0.0
    assert aug["noise"]["std_max"] == pytest.approx(math.sqrt(0.1), abs=1e-4)
    assert aug["bias_field"]["amplitude_max"] == 0.3


def test_a_plan_saved_with_an_unbounded_bias_field_gets_the_bounded_one():
    from types import SimpleNamespace

    saved = plan_augmentation((1, 1, 1), (32, 32, 32), {0: "T1"}, [ChannelNorm("zscore")])
    saved["bias_field"] = {"prob": 0.3, "coeff_max": 0.3, "degree": 3}
    plan = SimpleNamespace(augmentation=saved)
    assert augmentation_of(plan)["bias_field"] == {"prob": 0.3, "amplitude_max": 0.3, "degree": 3}
    assert saved["bias_field"]["coeff_max"] == 0.3  # the plan itself is left as it was


def test_read_box_is_larger_for_rotation_and_exact_for_the_light_recipe():
    aug = plan_augmentation((1, 1, 1), (32, 32, 32), {0: "T1"})
    assert all(r > 32 and (r - 32) % 2 == 0 for r in read_box(aug, (32, 32, 32)))
    assert read_box({**aug, "recipe": "light"}, (32, 32, 32)) == (32, 32, 32)
    assert read_box(apply_overrides(aug, {"rotation.prob": 0.0, "scale.prob": 0.0}), (32, 32, 32)) == (32, 32, 32)


def test_overrides_apply_by_flattened_name():
    aug = plan_augmentation((1, 1, 1), (32, 32, 32), {0: "T1"})
    out = apply_overrides(aug, parse_overrides(["noise.prob=0.5", "blur.sigma=[0.25, 1.5]", "recipe=light"]))
    assert out["noise"]["prob"] == 0.5 and out["blur"]["sigma"] == [0.25, 1.5] and out["recipe"] == "light"
    assert aug["noise"]["prob"] == 0.1  # the input is not changed
    assert flatten(out)["noise.prob"] == 0.5


@pytest.mark.parametrize(("items", "message"), [
    (["noise.probability=0.5"], r"--aug noise.probability: unknown augmentation setting; known: .*noise.prob"),
    (["noise.prob=1.5"], r"--aug noise.prob=1.5: a probability must be in \[0, 1\]"),
    (["blur.sigma=[1.5, 0.5]"], r"--aug blur.sigma=\[1.5, 0.5\]: expected \[low, high\] with low <= high"),
    (["recipe=heavy"], r"--aug recipe='heavy': must be one of planned, light"),
    (["noise.prob"], r"--aug 'noise.prob': expected KEY=VALUE"),
    (["gamma.range=0.5"], r"--aug gamma.range=0.5: expected a list of 2"),
], ids=["unknown", "probability", "reversed range", "recipe", "no value", "not a list"])
def test_bad_overrides_name_the_key_and_the_value(items, message):
    aug = plan_augmentation((1, 1, 1), (32, 32, 32), {0: "T1"})
    with pytest.raises(InputError, match=message):
        apply_overrides(aug, parse_overrides(items))


def test_the_plan_carries_the_section_and_the_user_overrides(tiny_dataset):
    from medseg.data.datalist import load_dataset
    from medseg.plan.planner import Plan, plan_dataset

    dataset = load_dataset(tiny_dataset)
    _, plan, sources = plan_dataset(dataset, overrides={"augmentation": {"noise.prob": 0.5}})
    assert plan.augmentation["noise"]["prob"] == 0.5 and sources["augmentation"] == "user"
    assert Plan.from_dict(plan.to_dict()).augmentation == plan.augmentation
    with pytest.raises(InputError, match=r"--aug noise.prob=2: a probability must be in \[0, 1\]"):
        plan_dataset(dataset, overrides={"augmentation": {"noise.prob": 2}})
