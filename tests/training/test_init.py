"""``--init``: output channels matched by label name, the plan that travels with the weights, refusals, a MONAI
bundle not written by medseg (the spleen_ct_segmentation network), and the frozen encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medseg.data.datalist import LabelSpec, load_dataset
from medseg.errors import InputError
from medseg.plan.network import network_from_plan
from medseg.plan.planner import ChannelNorm, ComputeBudget, NetworkPlan, Plan
from medseg.training.config import TrainConfig
from medseg.training.init import initialise, read_source, transfer_plan
from medseg.training.init_source import InitSource
from medseg.utils.safe_load import UnsafeCheckpointError

UNET = NetworkPlan(name="unet", filters=(4, 8), kernels=((3, 3, 3),) * 2, strides=((1, 1, 1), (2, 2, 2)),
                   deep_supervision=False, deep_supr_num=1, num_res_units=1)
DYNUNET = NetworkPlan(name="dynunet", filters=(4, 8, 16), kernels=((3, 3, 3),) * 3,
                      strides=((1, 1, 1), (2, 2, 2), (2, 2, 2)), deep_supervision=True, deep_supr_num=1)
SOURCE_LABELS = {0: "background", 1: "organ", 2: "lesion"}
SPLEEN_NET = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
              "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "batch"}


def _plan(names: dict[int, str], net: NetworkPlan = UNET) -> Plan:
    return Plan(spacing=(1.0, 1.0, 1.0), patch_size=(16, 16, 16), batch_size=2, samples_per_case=1, network=net,
                normalization=(ChannelNorm("zscore"),), class_ratios=(1.0,) * len(names),
                label_spec=LabelSpec(dict(names)))


def _source(net: NetworkPlan = UNET, labels: dict[int, str] | None = SOURCE_LABELS, **kw) -> tuple[InitSource, dict]:
    torch.manual_seed(1)
    state = network_from_plan(net, 1, len(labels or SOURCE_LABELS)).state_dict()
    src = InitSource(spec="SRC", kind="checkpoint", name="src.pt", weights_file=Path("src.pt"), sha256="0" * 64,
                     state=state, network=net, in_channels=1, channels={0: "CT"}, labels=labels, **kw)
    return src, state


@pytest.fixture(scope="module")
def fingerprinted(tiny_dataset):
    from medseg.plan.fingerprint import extract_fingerprint

    dataset = load_dataset(tiny_dataset)
    return dataset, extract_fingerprint(dataset)


def test_unet_output_channels_follow_label_names():
    # source: background 0, organ 1, lesion 2; new data: background 0, lesion 1, tumour 2 (new)
    source, src = _source()
    torch.manual_seed(2)
    network = network_from_plan(UNET, 1, 3)
    fresh = {k: v.clone() for k, v in network.state_dict().items()}
    report = initialise(network, source, _plan({0: "background", 1: "lesion", 2: "tumour"}))
    got = network.state_dict()
    up = "model.2.0.conv.weight"  # transposed conv (in, out = classes, k, k, k)
    assert torch.equal(got[up][:, 0], src[up][:, 0]) and torch.equal(got[up][:, 1], src[up][:, 2])
    assert torch.equal(got[up][:, 2], fresh[up][:, 2])
    last = "model.2.1.conv.unit0.conv.weight"  # classes x classes: both dims follow the names
    assert torch.equal(got[last][1, 1], src[last][2, 2]) and torch.equal(got[last][1, 0], src[last][2, 0])
    assert torch.equal(got[last][2], fresh[last][2]) and torch.equal(got[last][:, 2], fresh[last][:, 2])
    assert torch.equal(got["model.0.conv.unit0.conv.weight"], src["model.0.conv.unit0.conv.weight"])
    assert report["labels"]["matched"] == {"background": {"source_channel": 0, "channel": 0},
                                           "lesion": {"source_channel": 2, "channel": 1}}
    assert report["labels"]["new"] == ["tumour"] and report["labels"]["dropped"] == ["organ"]
    reinit = {e["tensor"]: e for e in report["reinitialised"]}
    assert reinit[up] == {"tensor": up, "shape": [12, 3, 3, 3, 3], "channels": ["tumour"]}
    assert {e["tensor"] for e in report["skipped"] if e.get("channels") == ["organ"]} == set(reinit)
    body = [k for k in src if not k.startswith("model.2.")]
    assert set(body) <= {e["tensor"] for e in report["loaded"]}


def test_dynunet_heads_and_deep_supervision_heads_follow_label_names():
    source, src = _source(DYNUNET)
    network = network_from_plan(DYNUNET, 1, 2)
    report = initialise(network, source, _plan({0: "background", 1: "lesion"}, DYNUNET))
    got = network.state_dict()
    for key in ("output_block.conv.conv.weight", "deep_supervision_heads.0.conv.conv.weight"):
        assert torch.equal(got[key][1], src[key][2]) and torch.equal(got[key][0], src[key][0])
    assert report["reinitialised"] == [] and report["labels"]["dropped"] == ["organ"]


def test_unnamed_outputs_start_fresh():
    source, src = _source(labels=None)
    network = network_from_plan(UNET, 1, 3)
    before = network.state_dict()["model.2.0.conv.bias"].clone()
    report = initialise(network, source, _plan(SOURCE_LABELS))
    assert torch.equal(network.state_dict()["model.2.0.conv.bias"], before)
    assert all("does not name" in e["reason"] for e in report["reinitialised"]) and report["reinitialised"]


def test_architecture_mismatch_loads_nothing_and_lists_the_tensors():
    wide = NetworkPlan(name="unet", filters=(8, 16), kernels=UNET.kernels, strides=UNET.strides,
                       deep_supervision=False, deep_supr_num=1, num_res_units=1)
    source, _ = _source(wide)
    network = network_from_plan(UNET, 1, 3)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(InputError, match=r"the weights do not fit the network .*\n  - "
                       r"model\.0\.conv\.unit0\.conv\.bias: ours \[4\], source \[8\]"):
        initialise(network, source, _plan(SOURCE_LABELS))
    assert all(torch.equal(v, before[k]) for k, v in network.state_dict().items())


class Payload:  # a pickled object: not a tensor or primitive container
    pass


def test_checkpoint_holding_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match=rf"{path}: contains a pickled object of type .*Payload"):
        read_source(str(path))


def test_plan_travels_with_the_weights_and_statistics_are_replanned(fingerprinted):
    dataset, fingerprint = fingerprinted
    source, _ = _source(spacing=(2.0, 2.0, 3.0), patch_size=(32, 32, 16), batch_size=3, samples_per_case=1,
                        normalization=(ChannelNorm("ct", lower=-1.0, upper=1.0, mean=999.0, std=1.0),))
    cfg = TrainConfig(data=str(dataset.root), out="unused", batch_size=4)
    plan, sources = transfer_plan(source, fingerprint, dataset, ComputeBudget.for_device("cpu"), cfg)
    assert plan.network == UNET and plan.spacing == (2.0, 2.0, 3.0) and plan.patch_size == (32, 32, 16)
    assert plan.batch_size == 4 and sources["batch_size"] == "user" and sources["spacing"] == "source"
    stats = fingerprint["foreground_intensity_properties_per_channel"]["0"]
    assert plan.normalization[0].scheme == "ct" and plan.normalization[0].mean == pytest.approx(stats["mean"])
    assert plan.label_spec == dataset.label_spec and sources["filters"] == "source"


@pytest.mark.parametrize(("override", "message"), [
    ({"channels": (4, 16)}, r"--channels \[4, 16\] differs from the source's \[4, 8\]"),
    ({"strides": (1,)}, r"--strides \[1\] differs from the source's \[\[2, 2, 2\]\]"),
    ({"net": "dynunet"}, "--net dynunet differs from the source's unet"),
    ({"patch_size": (17, 16, 16)}, r"--patch-size \[17, 16, 16\]: each side must be divisible by the source"),
], ids=["filters", "strides", "net", "patch"])
def test_overrides_that_break_the_weights_are_refused(fingerprinted, override, message):
    dataset, fingerprint = fingerprinted
    source, _ = _source(spacing=(2.0, 2.0, 3.0), patch_size=(16, 16, 16))
    cfg = TrainConfig(data=str(dataset.root), out="unused", **override)
    with pytest.raises(InputError, match=message):
        transfer_plan(source, fingerprint, dataset, ComputeBudget.for_device("cpu"), cfg)


def test_other_input_channels_are_refused_naming_both_lists(fingerprinted):
    dataset, fingerprint = fingerprinted
    source, _ = _source()
    source.in_channels, source.channels = 2, {0: "T1", 1: "T2"}
    cfg = TrainConfig(data=str(dataset.root), out="unused")
    with pytest.raises(InputError, match=r"2 input channel\(s\) \['T1', 'T2'\], dataset .* has 1: \['CT'\]"):
        transfer_plan(source, fingerprint, dataset, ComputeBudget.for_device("cpu"), cfg)


def write_spleen_like_bundle(root: Path, network_def: dict | None = None) -> dict:
    """A hand-written MONAI bundle with the spleen_ct_segmentation network, ``$`` expressions elsewhere."""
    from monai.networks.nets import UNet

    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    config = {"imports": ["$import glob"], "device": "$torch.device('cpu')", "network_def": network_def or SPLEEN_NET,
              "network": "$@network_def.to(@device)",
              "preprocessing": {"_target_": "Compose", "transforms": [
                  {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
                  {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -57, "a_max": 164, "b_min": 0,
                   "b_max": 1, "clip": True}]},
              "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "sw_batch_size": 4}}
    (root / "configs" / "inference.json").write_text(json.dumps(config), encoding="utf-8")
    meta = {"name": "spleen_ct_segmentation", "network_data_format": {
        "inputs": {"image": {"modality": "CT", "num_channels": 1}},
        "outputs": {"pred": {"channel_def": {"0": "background", "1": "spleen"}}}}}
    (root / "configs" / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    torch.manual_seed(3)
    net = UNet(**{k: v for k, v in SPLEEN_NET.items() if k != "_target_"})
    state = net.state_dict()
    torch.save(state, root / "models" / "model.pt")
    return state


def test_monai_bundle_not_written_by_medseg_initialises_a_run(tmp_path, fingerprinted):
    dataset, fingerprint = fingerprinted
    state = write_spleen_like_bundle(tmp_path / "spleen")
    source = read_source(str(tmp_path / "spleen"))
    assert (source.kind, source.name, source.network.norm, source.network.filters) == (
        "bundle", "spleen_ct_segmentation", "batch", (16, 32, 64, 128, 256))
    cfg = TrainConfig(data=str(dataset.root), out="unused")
    plan, sources = transfer_plan(source, fingerprint, dataset, ComputeBudget.for_device("cpu"), cfg)
    assert plan.spacing == (1.5, 1.5, 2.0) and plan.patch_size == (96, 96, 96) and sources["normalization"] == "source"
    assert plan.normalization == (ChannelNorm("ct", lower=-57.0, upper=164.0, mean=-57.0, std=221.0),)  # the HU window
    network = network_from_plan(plan.network, 1, 3)
    report = initialise(network, source, plan)
    assert torch.equal(network.state_dict()["model.0.conv.unit0.adn.N.running_mean"],
                       state["model.0.conv.unit0.adn.N.running_mean"])
    assert report["labels"] == {"matched": {"background": {"source_channel": 0, "channel": 0}},
                                "new": ["organ", "lesion"], "dropped": ["spleen"], "unnamed": ""}
    head = "model.2.0.adn.N.running_mean"
    assert {"tensor": head, "shape": [3], "channels": ["background"]} in report["loaded"]
    assert {"tensor": head, "shape": [3], "channels": ["organ", "lesion"]} in report["reinitialised"]
    assert {"tensor": head, "shape": [2], "channels": ["spleen"]} in report["skipped"]
    # every tensor but the head's 10, whose PReLU weight and batch counter have no class dimension and load whole
    assert len([e for e in report["loaded"] if "channels" not in e]) == len(state) - 8


def test_bundle_network_def_with_code_is_refused(tmp_path):
    write_spleen_like_bundle(tmp_path / "b", {**SPLEEN_NET, "out_channels": "$2"})
    with pytest.raises(InputError, match=r"network_def holds code.*\n.*key 'network_def::out_channels': '\$' expr"):
        read_source(str(tmp_path / "b"))


@pytest.mark.parametrize("net", [UNET, DYNUNET], ids=["unet", "dynunet"])
def test_encoder_is_frozen_for_the_first_epochs(net):
    from ignite.engine import Engine, Events

    from medseg.training.freeze import FreezeEncoder, encoder_modules

    network = network_from_plan(net, 1, 2)
    blocks = encoder_modules(network)
    assert len(blocks) == len(net.filters)  # one block per level: the down blocks and the bottom
    encoder = {id(p) for b in blocks for p in b.parameters()}
    decoder = [p for p in network.parameters() if id(p) not in encoder]
    assert encoder and decoder
    seen = []
    engine = Engine(lambda e, b: None)
    FreezeEncoder(network, 2).attach(engine)
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(
        (all(not p.requires_grad for b in blocks for p in b.parameters()), all(p.requires_grad for p in decoder))))
    engine.run([0], max_epochs=3)
    assert seen == [(True, True), (True, True), (False, True)]
