"""The committed ct_organ_lesion bundle: spec files, no code in configs, MONAI's checks, train/evaluate/export."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from medseg.bundle.schema import SCHEMA_FILE
from medseg.bundle.template import BundleParams, render_configs
from medseg.utils.trust import check_config, load_config
from tests.bundle.conftest import BUNDLE, TINY_OVERRIDES, monai_bundle

SPEC_FILES = ["configs/metadata.json", "configs/train.json", "configs/evaluate.json", "configs/inference.json",
              "configs/multi_gpu_train.json", "configs/logging.conf", "docs/README.md", "LICENSE",
              "models/.gitkeep", "large_files.yml", "docs/data_license.txt", SCHEMA_FILE]


def test_bundle_has_every_spec_file():
    missing = [f for f in SPEC_FILES if not (BUNDLE / f).is_file()]
    assert missing == []


def test_committed_configs_are_the_rendered_template():
    rendered = render_configs(BundleParams())
    for name, content in rendered.items():
        on_disk = json.loads((BUNDLE / "configs" / name).read_text(encoding="utf-8"))
        if name == "metadata.json":  # library versions are those of the machine that wrote it
            versions = {"monai_version", "pytorch_version", "numpy_version", "optional_packages_version",
                        "required_packages_version"}
            on_disk = {k: v for k, v in on_disk.items() if k not in versions}
            content = {k: v for k, v in content.items() if k not in versions}
        assert on_disk == content, name


@pytest.mark.parametrize("name", ["train", "evaluate", "inference", "multi_gpu_train"])
def test_configs_hold_wiring_not_code(name):
    path = BUNDLE / "configs" / f"{name}.json"
    assert check_config(ConfigParser.load_config_file(str(path)), path) == []
    assert "$" not in path.read_text(encoding="utf-8")


def test_train_and_overrides_load_untrusted():
    multi = load_config([BUNDLE / "configs" / "train.json", BUNDLE / "configs" / "multi_gpu_train.json"])
    # the override file's keys replace train.json's: DDP network, sampler instead of shuffling
    assert multi["network"]["_target_"] == "medseg.bundle.components.distributed_network"
    assert multi["train#dataloader#shuffle"] is False
    # every rank validates (no rank filter on the trainer's handlers); only writers are rank-0 only
    override = json.loads((BUNDLE / "configs" / "multi_gpu_train.json").read_text(encoding="utf-8"))
    assert not [k for k in override if "handlers" in k]
    train = load_config(BUNDLE / "configs" / "train.json")
    assert [h.get("_disabled_") for h in train["validate#handlers"]] == ["@is_not_rank0", "@is_not_rank0"]
    evaluate = load_config([BUNDLE / "configs" / "train.json", BUNDLE / "configs" / "evaluate.json"])
    assert evaluate["run"] == [{"_target_": "medseg.bundle.components.run_engine", "engine": "@validate#evaluator"}]


def test_metadata_network_data_format():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text(encoding="utf-8"))
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == 1 and image["value_range"] == [0, 1] and image["channel_def"] == {"0": "image"}
    assert pred["num_channels"] == 3 and pred["channel_def"] == {"0": "background", "1": "organ", "2": "lesion"}


def test_verify_metadata_offline_with_local_schema(tmp_path):
    pytest.importorskip("jsonschema", reason="MONAI's verify_metadata needs jsonschema")
    bundle = tmp_path / "b"
    shutil.copytree(BUNDLE, bundle)
    monai_bundle("verify_metadata", bundle, meta_file="configs/metadata.json", filepath=SCHEMA_FILE)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    del meta["network_data_format"]["inputs"]["image"]["num_channels"]
    (bundle / "bad.json").write_text(json.dumps(meta))
    from monai.bundle import verify_metadata

    with pytest.raises(ValueError, match="'num_channels' is a required property"):
        verify_metadata(meta_file=str(bundle / "bad.json"), filepath=str(bundle / SCHEMA_FILE))


@pytest.mark.slow
def test_bundle_trains_evaluates_infers_and_exports(tmp_path, tiny_dataset):
    bundle = tmp_path / "b"
    shutil.copytree(BUNDLE, bundle)
    data = {"dataset_dir": str(tiny_dataset), **TINY_OVERRIDES}
    monai_bundle("run", bundle, config_file="configs/train.json", epochs=2, **data)
    assert (bundle / "models" / "model.pt").is_file()

    monai_bundle("run", bundle, config_file=["configs/train.json", "configs/evaluate.json"], **data)
    rows = dict(line.split(",")[:2] for line in (bundle / "eval" / "metrics.csv").read_text(encoding="utf-8").splitlines())
    assert 0.0 <= float(rows["val_mean_dice"]) <= 1.0 and {"val_mean_hd95", "val_hd95_organ", "val_hd95_lesion"} <= set(rows)

    monai_bundle("run", bundle, config_file="configs/inference.json", output_dir=str(tmp_path / "seg"), **data)
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["case_006_seg.nii.gz", "case_007_seg.nii.gz"]

    shape = {"_meta_#network_data_format#inputs#image#spatial_shape": [16, 16, 16]}
    net = {k: v for k, v in TINY_OVERRIDES.items() if k.startswith("pipeline")}
    monai_bundle("verify_net_in_out", bundle, "network_def", meta_file="configs/metadata.json",
                 config_file="configs/inference.json", device="cpu", **net, **shape)
    monai_bundle("ckpt_export", bundle, "network_def", filepath="models/model.ts", ckpt_file="models/model.pt",
                 meta_file="configs/metadata.json", config_file="configs/inference.json", **net)

    from medseg.bundle.verify import torchscript_max_difference

    assert torchscript_max_difference(bundle, overrides={**net, **shape}) <= 1e-4
    scripted = torch.jit.load(str(bundle / "models" / "model.ts"))
    x = torch.rand(1, 1, 32, 32, 16)
    eager = ConfigParser({"n": {"_target_": "medseg.plan.network.build_network", "num_classes": 3,
                                "channels": [8, 16, 32], "strides": [2, 2]}}).get_parsed_content("n")
    eager.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    with torch.no_grad():
        assert np.abs((scripted(x) - eager.eval()(x)).numpy()).max() <= 1e-4
