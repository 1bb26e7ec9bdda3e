"""The planned augmentation of a sampled box: patch shape, geometry shared by image and label, the read box."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.transforms import Randomizable

from medseg.data.datalist import LabelSpec
from medseg.plan.augmentation import apply_overrides, plan_augmentation
from medseg.plan.planner import ChannelNorm, NetworkPlan, Plan
from medseg.preprocessing.augment import augmentation, read_padding, read_size
from medseg.transforms.acquisition import RandBiasFieldd
from medseg.transforms.spatial import RandPatchAffined


def _plan(spacing=(1.0, 1.0, 1.0), patch=(16, 16, 16), modality="CT", **overrides) -> Plan:
    norm = (ChannelNorm("ct", lower=-100, upper=200, mean=100.0, std=25.0) if modality == "CT" else ChannelNorm("zscore"),)
    plan = Plan(spacing=spacing, patch_size=patch, batch_size=2, samples_per_case=1, network=NetworkPlan(),
                normalization=norm, class_ratios=(1.0, 1.0), label_spec=LabelSpec({0: "background", 1: "organ"}),
                channel_names={0: modality})
    aug = apply_overrides(plan_augmentation(spacing, patch, plan.channel_names, norm), overrides)
    return plan.replace(augmentation=aug)


def _box(plan: Plan) -> dict[str, torch.Tensor]:
    size = read_size(plan)
    label = torch.zeros(1, *size)
    c = [s // 2 for s in size]
    label[0, c[0] - 6:c[0] + 3, c[1] - 4:c[1] + 5, c[2] - 5:c[2] + 4] = 1
    return {"image": label * 4.0 - 2.0, "label": label}


def test_read_size_is_the_patch_plus_an_even_margin_that_holds_any_planned_rotation():
    plan = _plan()
    size, patch = np.asarray(read_size(plan)), np.asarray(plan.patch_size)
    assert ((size - patch) % 2 == 0).all() and (size > patch).all()
    # corners of the patch rotated by 30 degrees about every axis (the planned maximum) stay in the box
    corners = np.array([[x, y, z] for x in (-8, 8) for y in (-8, 8) for z in (-8, 8)], float)
    a = math.radians(30)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    assert (np.abs(corners @ (rz @ ry @ rx).T).max(axis=0) <= size / 2).all()


def test_light_recipe_reads_the_patch_itself():
    assert read_size(_plan(recipe="light")) == (16, 16, 16)
    assert read_padding(_plan(recipe="light")) == []


@pytest.mark.parametrize("seed", range(4))
def test_every_transform_on_keeps_the_label_on_the_image(seed):
    # every probability at 1 except noise, which would blur the comparison
    probs = {f"{k}.prob": 1.0 for k in ("rotation", "scale", "blur", "brightness", "offset", "contrast",
                                         "low_resolution", "gamma_inverted", "gamma", "mirror")}
    plan = _plan(**probs, **{"noise.prob": 0.0})
    transforms = augmentation(plan, ["image", "label"], ["bilinear", "nearest"])
    data = _box(plan)
    for t in transforms:
        if isinstance(t, Randomizable):  # the clip is deterministic
            t.set_random_state(seed)
        data = t(data)
    image, label = torch.as_tensor(data["image"]), torch.as_tensor(data["label"])
    assert tuple(image.shape[1:]) == plan.patch_size == tuple(label.shape[1:])
    assert set(torch.unique(label).tolist()) <= {0.0, 1.0} and label.sum() > 0
    # the organ is still where the bright voxels are (the intensity transforms are monotone here)
    assert image[label == 1].mean() > image[label == 0].mean() + 0.5


def _augmented_image(plan: Plan, seed: int, scale: float = 3.0) -> torch.Tensor:
    data = _box(plan)
    data["image"] = data["image"] * scale
    for t in augmentation(plan, ["image", "label"], ["bilinear", "nearest"]):
        if isinstance(t, Randomizable):  # the clip is deterministic
            t.set_random_state(seed)
        data = t(data)
    return torch.as_tensor(data["image"])


def test_ct_intensities_stay_inside_the_normalisation_window():
    # offset, noise, brightness, contrast and both gammas at probability 1 push values out; the clip ends the chain
    probs = {f"{k}.prob": 1.0 for k in ("noise", "blur", "brightness", "offset", "contrast", "low_resolution",
                                         "gamma_inverted", "gamma")}
    plan, unclipped = _plan(**probs), _plan(**probs, **{"clip.prob": 0.0})
    lo, hi = plan.augmentation["clip"]["windows"][0]  # [-8, 4]; the box is [-6, 6], partly outside already
    outside = 0
    for seed in range(6):
        image = _augmented_image(plan, seed)
        assert image.min() >= lo and image.max() <= hi
        raw = _augmented_image(unclipped, seed)
        outside += int(raw.min() < lo or raw.max() > hi)
    assert outside >= 4  # without the clip most draws leave the window (5 of these 6)


def test_an_offset_on_the_normalised_patch_then_the_clip_equals_the_offset_in_hounsfield_units():
    from medseg.transforms.intensity import ClipChannelsd, ct_windows, normalize_channels

    norm = [ChannelNorm("ct", lower=-100, upper=200, mean=100.0, std=25.0)]
    rng = np.random.default_rng(0)
    hu = torch.as_tensor(rng.uniform(-100, 200, size=(1, 12, 12, 6)), dtype=torch.float32)  # inside the window
    clip = ClipChannelsd("image", ct_windows(norm))
    for delta in (-150.0, -60.0, 35.0, 60.0, 250.0):
        augmented = clip({"image": normalize_channels(hu, norm) + delta / 25.0})["image"]
        torch.testing.assert_close(augmented, normalize_channels(hu + delta, norm), atol=1e-5, rtol=0)


def test_dummy_2d_rotates_about_the_coarse_axis_only():
    plan = _plan(spacing=(0.8, 0.8, 2.5), patch=(32, 32, 8))
    spatial = augmentation(plan, ["image", "label"], ["bilinear", "nearest"])[0]
    assert isinstance(spatial, RandPatchAffined)
    assert spatial.rotation_range[0] == spatial.rotation_range[1] == (0.0, 0.0)
    assert spatial.rotation_range[2][1] == pytest.approx(math.pi, abs=1e-5)
    assert spatial.scale_axes == (0, 1) and read_size(plan)[2] == 8


def test_modality_chooses_the_intensity_transforms():
    ct = [type(t).__name__ for t in augmentation(_plan(), ["image", "label"], ["bilinear", "nearest"])]
    mr = [type(t).__name__ for t in augmentation(_plan(modality="T1"), ["image", "label"], ["bilinear", "nearest"])]
    assert "RandShiftIntensityd" in ct and RandBiasFieldd.__name__ not in ct
    assert "RandShiftIntensityd" not in mr and RandBiasFieldd.__name__ in mr


def test_a_scale_that_reads_past_the_box_repeats_image_and_label_alike():
    # the read box covers scaling up to MAX_READ_SCALE; a larger factor reads past its border, where the
    # image repeats its edge voxels: the label must repeat with it, not turn to background under organ
    plan = _plan(**{"scale.prob": 1.0, "scale.range": [1.4, 1.4], "rotation.prob": 0.0, "mirror.prob": 0.0},
                 **{f"{k}.prob": 0.0 for k in ("noise", "blur", "brightness", "offset", "contrast", "low_resolution")})
    size = read_size(plan)
    label = torch.zeros(1, *size)
    label[0, : size[0] // 2 + 2] = 1  # an organ up to the box's low-x face
    data = {"image": label * 4.0 - 2.0, "label": label}
    for t in augmentation(plan, ["image", "label"], ["bilinear", "nearest"]):
        data = t(data)
    image, label = torch.as_tensor(data["image"]), torch.as_tensor(data["label"])
    organ = image > 1.9  # voxels whose interpolated intensity is wholly organ
    assert organ[0, 0].all()  # the patch's low-x face lies outside the box: it read the repeated organ
    assert (label[organ] == 1).all() and (label[image < -1.9] == 0).all()
