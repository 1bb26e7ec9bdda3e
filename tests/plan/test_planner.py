"""The plan follows the data: spacing and topology from the voxel size, normalisation from the
modality and fingerprint, sampling ratios from the class frequencies; user overrides win."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medseg.data.datalist import load_dataset
from medseg.data.synth import SynthConfig, synthesise_dataset
from medseg.errors import InputError
from medseg.plan import ChannelNorm, ComputeBudget, Plan, make_plan, plan_dataset

CPU = ComputeBudget.for_device("cpu")


def _dataset(root, **kw):
    synthesise_dataset(root, SynthConfig(**{"train_cases": 3, "test_cases": 0, "seed": 2, **kw}))
    return load_dataset(root)


@pytest.fixture(scope="module")
def anisotropic(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("aniso") / "ds", size=64, spacing=(0.8, 0.8, 5.0))


def test_anisotropic_data_is_not_pooled_along_the_coarse_axis_first(anisotropic):
    _, plan, sources = plan_dataset(anisotropic)
    assert plan.spacing == (0.8, 0.8, 5.0)
    net = plan.network
    # z (5 mm) is pooled once the in-plane spacing has doubled twice (0.8 -> 1.6 -> 3.2 mm, 5 <= 2 x 3.2)
    assert net.strides[:4] == ((1, 1, 1), (2, 2, 1), (2, 2, 1), (2, 2, 2))
    # a kernel is 1 along z while z is more than twice the finest spacing (5 > 1.6, 5 > 3.2)
    assert net.kernels[:3] == ((3, 3, 1), (3, 3, 1), (3, 3, 3))
    assert all(p % t == 0 for p, t in zip(plan.patch_size, net.total_stride, strict=True))
    assert plan.patch_size[2] <= 32 and plan.patch_size[0] >= 2 * plan.patch_size[2]  # at most the 32 slices
    assert set(sources.values()) == {"plan"}


def test_isotropic_data_pools_every_axis(tmp_path):
    _, plan, _ = plan_dataset(_dataset(tmp_path / "iso", size=32, spacing=(1.5, 1.5, 1.5)))
    assert plan.spacing == (1.5, 1.5, 1.5)
    assert plan.network.strides[1] == (2, 2, 2)
    assert set(plan.network.kernels) == {(3, 3, 3)}


def test_normalisation_per_channel_follows_the_modality(tmp_path):
    root = tmp_path / "mixed"
    synthesise_dataset(root, SynthConfig(train_cases=3, test_cases=0, size=32, spacing=(2, 2, 3), seed=4,
                                         channels=2))
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    meta["modality"] = {"0": "CT", "1": "T2"}
    (root / "dataset.json").write_text(json.dumps(meta))
    fp, plan, _ = plan_dataset(load_dataset(root))
    props = fp["foreground_intensity_properties_per_channel"]["0"]
    assert plan.normalization == (
        ChannelNorm("ct", lower=props["percentile_00_5"], upper=props["percentile_99_5"], mean=props["mean"],
                    std=props["std"]),
        ChannelNorm("zscore"))
    # and the values are the dataset's foreground: organ 110 HU, lesions 45 HU, noise 20 HU, a bias field
    assert -40 < props["percentile_00_5"] < 60 < props["mean"] < 130 < props["percentile_99_5"] < 250
    _, mr_plan, _ = plan_dataset(_dataset(tmp_path / "mr", size=32, spacing=(2, 2, 3), modality="MR"))
    assert mr_plan.normalization == (ChannelNorm("zscore"),)


def _counts(ds):
    labels = [np.asarray(nib.load(e["label"]).dataobj) for e in ds.training]
    return [sum(int((lab == v).sum()) for lab in labels) for v in (1, 2)]


def test_rarer_classes_are_sampled_more(tmp_path):
    ratios = {}
    for name, radius in (("small", (1.5, 2.0)), ("large", (5.0, 6.0))):
        ds = _dataset(tmp_path / name, size=48, spacing=(1.5, 1.5, 2.0), lesions=(2, 2), lesion_radius_mm=radius)
        _, plan, _ = plan_dataset(ds)
        organ, lesion = _counts(ds)
        assert organ > lesion > 0
        # background 1; the most frequent class 1; the others 1 + log10(f_max / f), capped at 4
        assert plan.class_ratios == pytest.approx((1.0, 1.0, min(4.0, 1 + np.log10(organ / lesion))), abs=1e-3)
        ratios[name] = plan.class_ratios[2]
    assert ratios["small"] > ratios["large"] > 1.0


def test_overrides_win_and_are_marked_as_from_the_user(anisotropic):
    from medseg.plan.fingerprint import extract_fingerprint

    fp = extract_fingerprint(anisotropic)
    plan, sources = make_plan(fp, anisotropic, CPU, {"spacing": (1.6, 1.6, 5.0), "patch_size": (32, 32, 8),
                                                     "batch_size": 3, "filters": (8, 16), "channels": None})
    assert plan.spacing == (1.6, 1.6, 5.0) and plan.patch_size == (32, 32, 8) and plan.batch_size == 3
    assert plan.network.filters == (8, 16)
    assert {k for k, v in sources.items() if v == "user"} == {"spacing", "patch_size", "batch_size", "filters"}
    assert sources["samples_per_case"] == "plan" and plan.samples_per_case == CPU.samples_per_case
    with pytest.raises(InputError, match=r"--patch-size \[33, 32, 8\]: each side must be divisible by the "
                                         r"network's total stride \[2, 2, 1\]"):
        make_plan(fp, anisotropic, CPU, {"patch_size": (33, 32, 8), "filters": (8, 16)})
    with pytest.raises(InputError, match="unknown plan override"):
        make_plan(fp, anisotropic, CPU, {"pixdim": (1, 1, 1)})


def test_train_config_overrides_reach_the_plan(anisotropic, tmp_path):
    from medseg.training.train import TrainConfig, prepare_plan

    cfg = TrainConfig(data=str(anisotropic.root), out=str(tmp_path / "run"), device="cpu", pixdim=(1.6, 1.6, 5.0),
                      channels=(8, 16, 32))
    plan = prepare_plan(cfg)
    assert plan.spacing == (1.6, 1.6, 5.0) and plan.network.filters == (8, 16, 32)
    assert cfg.plan_sources["spacing"] == cfg.plan_sources["filters"] == "user"
    assert cfg.plan_sources["patch_size"] == "plan"
    saved = json.loads((tmp_path / "run" / "plans.json").read_text(encoding="utf-8"))
    assert saved["plan"] == cfg.plan and saved["sources"] == cfg.plan_sources
    assert saved["fingerprint"]["spacings"] == [pytest.approx([0.8, 0.8, 5.0])] * 3


def test_plan_json_round_trip(anisotropic, tmp_path):
    _, plan, _ = plan_dataset(anisotropic)
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    regions = load_dataset(synthesise_dataset(tmp_path / "reg", SynthConfig(
        train_cases=2, test_cases=0, size=32, spacing=(2, 2, 3), regions=True, vessels=True, layout="nnunet")))
    _, rplan, _ = plan_dataset(regions)
    assert rplan.label_spec.regions == {"whole": (1, 2, 3), "core": (2, 3), "lesion": (3,), "vessel": (4,)}
    assert rplan.out_channels == 4 and len(rplan.class_ratios) == 5
    assert Plan.from_dict(json.loads(json.dumps(rplan.to_dict()))) == rplan
