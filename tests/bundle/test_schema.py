"""Metadata schema (MONAI's meta_schema_20240725, offline) and medseg's named lint warnings."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from medseg.bundle.lint import lint_bundle, lint_metadata
from medseg.bundle.schema import META_SCHEMA, REQUIRED_FIELDS, validate_metadata, write_schema
from tests.bundle.conftest import BUNDLE

FIXTURES = Path(__file__).parent / "fixtures"
ZOO = ["spleen_ct_segmentation", "brats_mri_segmentation", "swin_unetr_btcv_segmentation", "wholeBody_ct_segmentation"]
OURS = json.loads((BUNDLE / "configs" / "metadata.json").read_text(encoding="utf-8"))

pytest.importorskip("jsonschema", reason="schema validation needs jsonschema")
# MONAI warns that a local schema file has no hash to check: the file is written by the test itself
pytestmark = pytest.mark.filterwarnings("ignore:No hash value provided:UserWarning")


def _zoo(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def _monai_verify(meta: dict, tmp_path: Path) -> None:
    """MONAI's own verify_metadata with medseg's schema file (exists, so nothing is downloaded)."""
    from monai.bundle import verify_metadata

    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(write_schema(tmp_path / "schema.json")))


@pytest.mark.parametrize("name", ZOO)
def test_model_zoo_metadata_is_valid(name, tmp_path):
    assert validate_metadata(_zoo(name)) == []
    _monai_verify(_zoo(name), tmp_path)


def test_our_metadata_is_valid_and_has_no_warnings(tmp_path):
    assert validate_metadata(OURS) == []
    _monai_verify(OURS, tmp_path)
    assert lint_bundle(BUNDLE, OURS, installed_medseg=OURS["required_packages_version"]["medseg"]) == []


def test_required_fields_are_the_published_ones():
    # meta_schema_20240725 requires these eleven; changelog, name, channel_def, is_patch_data are optional
    assert set(REQUIRED_FIELDS) == {"schema", "version", "monai_version", "pytorch_version", "numpy_version",
                                    "required_packages_version", "task", "description", "authors", "copyright",
                                    "network_data_format"}
    tensor = META_SCHEMA["$defs"]["tensor"]
    assert tensor["required"] == ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"]


def _without(meta: dict, *path: str) -> dict:
    out = copy.deepcopy(meta)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def _with(meta: dict, value, *path: str) -> dict:
    out = copy.deepcopy(meta)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


IMAGE = ("network_data_format", "inputs", "image")
PRED = ("network_data_format", "outputs", "pred")
POST = ("network_data_format", "post_processed_outputs", "pred")
BROKEN = {
    "no network_data_format": (_without(OURS, "network_data_format"),
                               "<root>: 'network_data_format' is a required property"),
    "no required_packages_version": (_without(OURS, "required_packages_version"),
                                     "<root>: 'required_packages_version' is a required property"),
    "version a number": (_with(OURS, 1, "version"), "version: 1 is not of type 'string'"),
    "no outputs": (_without(OURS, "network_data_format", "outputs"),
                   "network_data_format: 'outputs' is a required property"),
    "input without num_channels": (_without(OURS, *IMAGE, "num_channels"),
                                   "network_data_format/inputs/image: 'num_channels' is a required property"),
    "num_channels a string": (_with(OURS, "1", *IMAGE, "num_channels"),
                              "network_data_format/inputs/image/num_channels: '1' is not of type 'integer'"),
    "spatial_shape of floats": (_with(OURS, [16.5, 16, 16], *PRED, "spatial_shape"),
                                "network_data_format/outputs/pred/spatial_shape/0: 16.5 is not of type "
                                "'string', 'integer'"),
    "value_range of strings": (_with(OURS, ["0", "1"], *IMAGE, "value_range"),
                               "network_data_format/inputs/image/value_range/0: '0' is not of type 'number'"),
    "is_patch_data a string": (_with(OURS, "yes", *PRED, "is_patch_data"),
                               "network_data_format/outputs/pred/is_patch_data: 'yes' is not of type 'boolean'"),
    "post-processed output without dtype": (
        _without(OURS, *POST, "dtype"),
        "network_data_format/post_processed_outputs/pred: 'dtype' is a required property"),
    "second network without inputs": (
        _with(OURS, {"outputs": {}}, "generator_data_format"),
        "generator_data_format: 'inputs' is a required property"),
    "references not strings": (_with(OURS, [1], "references"), "references/0: 1 is not of type 'string'"),
}


@pytest.mark.parametrize("meta, message", list(BROKEN.values()), ids=list(BROKEN))
def test_broken_metadata_fails_with_a_specific_message(meta, message, tmp_path):
    assert message in validate_metadata(meta)
    with pytest.raises(ValueError, match="Failed validating"):  # and MONAI's verify_metadata agrees
        _monai_verify(meta, tmp_path)


LOOSER = {  # the published schema accepts these; the former hand-written schema refused them
    "no changelog": _without(OURS, "changelog"),
    "no name": _without(OURS, "name"),
    "no channel_def": _without(OURS, *IMAGE, "channel_def"),
    "no is_patch_data": _without(OURS, *PRED, "is_patch_data"),
    "free-form dtype and type": _with(_with(OURS, "torch.float32", *IMAGE, "dtype"), "volume", *IMAGE, "type"),
    "symbolic spatial shape": _with(OURS, ["8*n", "8*n", "8*n"], *IMAGE, "spatial_shape"),
    "scalar argument": _with(OURS, 0.5, "network_data_format", "inputs", "threshold"),
    "unknown top-level field": _with(OURS, {"x": 1}, "custom_field"),
}


@pytest.mark.parametrize("meta", list(LOOSER.values()), ids=list(LOOSER))
def test_what_the_published_schema_accepts_passes(meta, tmp_path):
    assert validate_metadata(meta) == []
    _monai_verify(meta, tmp_path)


def _codes(meta: dict, installed: str | None = "99.0") -> list[str]:
    return sorted(w.code for w in lint_metadata(meta, installed_medseg=installed))


@pytest.mark.parametrize("meta, codes", [
    (_without(OURS, "changelog"), ["MEDSEG-W001"]),
    (_with(OURS, "9.9.9", "version"), ["MEDSEG-W001"]),  # version without a changelog entry
    (_without(OURS, "name"), ["MEDSEG-W002"]),
    (_without(OURS, *IMAGE, "channel_def"), ["MEDSEG-W003"]),
    (_without(OURS, *POST, "is_patch_data"), ["MEDSEG-W004"]),
    (_with(OURS, "torch.float32", *IMAGE, "dtype"), ["MEDSEG-W005"]),
    (_with(OURS, 2, *IMAGE, "num_channels"), ["MEDSEG-W006"]),  # channel_def names one channel
], ids=["changelog", "changelog-entry", "name", "channel_def", "is_patch_data", "dtype", "channel_count"])
def test_stricter_rules_are_named_warnings(meta, codes):
    assert validate_metadata(meta) == []  # valid bundles ...
    assert _codes(meta) == codes  # ... with a warning each


def test_model_zoo_warnings():
    # only wholeBody has a name; its fixture lists 5 of its 105 channel names
    for name in ("spleen_ct_segmentation", "brats_mri_segmentation", "swin_unetr_btcv_segmentation"):
        assert _codes(_zoo(name)) == ["MEDSEG-W002"], name
    assert _codes(_zoo("wholeBody_ct_segmentation")) == ["MEDSEG-W006"]


def test_pre_2024_package_field_alone_fails_like_the_published_schema(tmp_path):
    # meta_schema_20240725 requires required_packages_version; the 2022 field name alone is not enough
    old = _zoo("spleen_ct_segmentation")
    old["optional_packages_version"] = old.pop("required_packages_version")
    assert validate_metadata(old) == ["<root>: 'required_packages_version' is a required property"]
    with pytest.raises(ValueError, match="'required_packages_version' is a required property"):
        _monai_verify(old, tmp_path)
    assert "MEDSEG-W007" in _codes(_with(OURS, {}, "optional_packages_version"))


@pytest.mark.parametrize("installed, warned", [("0.0.9", True), (None, True), ("0.1.0", False), ("1.2.0", False)])
def test_warns_when_installed_medseg_is_older(installed, warned):
    meta = _with(OURS, {"medseg": "0.1.0"}, "required_packages_version")
    messages = [w.message for w in lint_metadata(meta, installed_medseg=installed) if w.code == "MEDSEG-W008"]
    assert bool(messages) == warned
    if installed == "0.0.9":
        assert messages == ["the bundle needs medseg 0.1.0, installed is 0.0.9 (pip install -U 'medseg>=0.1.0')"]


def test_verify_reports_warnings_without_failing(tmp_path, capsys):
    import shutil

    from medseg.cli.main import main

    bundle = tmp_path / "b"
    shutil.copytree(BUNDLE, bundle)
    meta = _without(OURS, "changelog")
    meta["required_packages_version"]["medseg"] = "999.0"
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    code = main(["bundle", "verify", str(bundle), "--no-export"])
    out = capsys.readouterr().out
    assert "WARN  MEDSEG-W001 missing changelog" in out and "WARN  MEDSEG-W008 the bundle needs medseg 999.0" in out
    assert "PASS  verify_metadata" in out and code == 0, out


def test_verify_fails_on_broken_metadata_with_the_reason(tmp_path, capsys):
    import shutil

    from medseg.cli.main import main

    bundle = tmp_path / "b"
    shutil.copytree(BUNDLE, bundle)
    (bundle / "configs" / "metadata.json").write_text(json.dumps(_without(OURS, *IMAGE, "num_channels")))
    assert main(["bundle", "verify", str(bundle), "--no-export"]) == 2
    assert "network_data_format/inputs/image: 'num_channels' is a required property" in capsys.readouterr().out
