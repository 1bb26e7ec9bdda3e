"""Safe loading: untrusted configs may not run code; checkpoints load tensors and primitives only."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from medseg.errors import InputError
from medseg.utils.trust import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    UnsafeConfigError,
    check_target,
    load_config,
    safe_torch_load,
)

SAFE = {
    "imports": [],
    "num_classes": 3,
    "network_def": {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": "@num_classes",
                    "channels": [4, 8], "strides": [2]},
    "network": {"_target_": "torch.nn.Sequential", "_args_": ["@network_def"]},
    "optimizer": {"_target_": "torch.optim.AdamW", "params": "@network_def#parameters", "lr": 1e-3,
                  "_mode_": "callable"},
    "loss": {"_target_": "monai.losses.DiceCELoss", "to_onehot_y": True, "softmax": True},
    "copy": "%#num_classes",
}


def _write(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content) if path.suffix in (".yaml", ".yml") else json.dumps(content))
    return path


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_safe_config_loads_and_instantiates(tmp_path: Path, suffix: str) -> None:
    parser = load_config(_write(tmp_path / f"train{suffix}", SAFE))
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, torch.nn.Module)
    assert parser.get_parsed_content("copy") == 3
    assert parser.get_parsed_content("loss").__class__.__name__ == "DiceCELoss"


class Marker:
    """Set by a config that manages to call something: proves a refusal stopped the call."""

    called = False


@pytest.mark.parametrize(
    ("key_path", "value", "expected"),
    [
        ("network_def::channels", "$[4, 8]", "'$' expression (evaluated as Python): '$[4, 8]'"),
        ("imports::0", "$import os", "'$' expression"),
        ("evil", {"_target_": "os.system", "command": "touch pwned"}, "_target_ 'os.system' is outside"),
        ("evil", {"_target_": "builtins.eval", "source": "1"}, "is outside the allowed namespaces"),
        ("evil", {"_target_": "monai.utils.run_cmd", "cmd_list": ["touch", "pwned"]},
         "resolves to monai.utils.misc.run_cmd, which is not allowed"),
        ("evil", {"_target_": "run_cmd", "cmd_list": ["touch", "pwned"]}, "is a denied callable"),
        ("evil", {"_target_": "monai.bundle.run", "config_file": "other.json"}, "is a denied callable"),
        ("evil", {"_target_": "monai.utils.optional_import", "module": "os"},
         "resolves to monai.utils.module.optional_import"),
        ("evil", {"_target_": "torch.nn.functional.torch.load", "f": "x.pt"},
         "reaches module torch, outside the allowed namespaces"),
        ("evil", {"_target_": "torch.nn.Module.__init__"}, "private or invalid path component"),
        ("evil", {"_target_": "torch.load", "f": "x.pt"}, "is outside the allowed namespaces"),
        ("evil", {"_target_": "monai.data.PersistentDataset", "data": [], "cache_dir": ".", "weights_only": False},
         "argument weights_only=False"),
        ("evil", {"_target_": "UNet", "_mode_": "debug"}, "debug mode"),
    ],
    ids=["dollar_value", "dollar_import", "os_system", "builtins_eval", "monai_run_cmd_reexport",
         "run_cmd_short_name", "monai_bundle_run", "optional_import", "attribute_walk_to_torch_load",
         "dunder", "torch_load", "weights_only_false", "debug_mode"],
)
def test_unsafe_config_is_refused(tmp_path: Path, key_path: str, value: object, expected: str) -> None:
    content = json.loads(json.dumps(SAFE))
    node = content
    *parents, last = key_path.split("::")
    for k in parents:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if isinstance(node, list):
        node.append(value)
    else:
        node[last] = value
    path = _write(tmp_path / "untrusted.json", content)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(UnsafeConfigError) as info:
            load_config(path)
    finally:
        os.chdir(cwd)
    message = str(info.value)
    assert f"{path}: key '{key_path}'" in message  # names the file and the key path
    assert expected in message
    assert "trust" in message
    assert not (tmp_path / "pwned").exists()


def test_trusted_config_skips_the_checks(tmp_path: Path) -> None:
    path = _write(tmp_path / "trusted.json", {**SAFE, "double": "$@num_classes * 2"})
    with pytest.raises(UnsafeConfigError):
        load_config(path)
    assert load_config(path, trusted=True).get_parsed_content("double") == 6


def test_every_problem_of_every_file_is_listed(tmp_path: Path) -> None:
    base = _write(tmp_path / "base.json", SAFE)
    over = _write(tmp_path / "override.yaml", {"a": "$1", "b": {"_target_": "os.system"}})
    with pytest.raises(UnsafeConfigError) as info:
        load_config([base, over])
    assert len(info.value.problems) == 2
    assert all(str(over) in p for p in info.value.problems)


def test_macro_file_is_checked_too(tmp_path: Path) -> None:
    other = _write(tmp_path / "other.json", {"net": {"_target_": "os.system", "command": "true"}})
    main = _write(tmp_path / "main.json", {**SAFE, "net": f"%{other}#net"})
    with pytest.raises(UnsafeConfigError) as info:
        load_config(main)
    assert f"{other}: key 'net': _target_ 'os.system'" in str(info.value)


def test_multiple_files_merge_later_wins(tmp_path: Path) -> None:
    base = _write(tmp_path / "base.json", SAFE)
    over = _write(tmp_path / "override.json", {"num_classes": 5})
    assert load_config([base, over]).get_parsed_content("network_def").out_channels == 5


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("missing.json", None, "config file not found"),
    ("bad.json", "{not json", "not a readable config"),
    ("list.json", "[1, 2]", "must hold a mapping"),
    ("config.txt", "{}", "unsupported config type"),
])
def test_unreadable_config(tmp_path: Path, name: str, content: str | None, expected: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=expected) as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("target", ["UNet", "monai.networks.nets.UNet", "torch.nn.Conv3d", "torch.optim.AdamW",
                                    "torch.utils.data.DataLoader", "ignite.handlers.Checkpoint",
                                    "monai.transforms.LoadImaged", "torch.optim.lr_scheduler.CosineAnnealingLR"])
def test_allowed_targets(target: str) -> None:
    assert check_target(target) is None


# --- checkpoints ------------------------------------------------------------------------------


class Payload:
    def __reduce__(self):
        return (setattr, (Marker, "called", True))


def test_checkpoint_with_tensors_and_primitives_loads(tmp_path: Path) -> None:
    state = {"model": collections.OrderedDict(w=torch.ones(2, 2)), "epoch": 3, "history": [{"loss": 0.5}],
             "name": "x", "best": None}
    torch.save(state, tmp_path / "ok.pt")
    loaded = safe_torch_load(tmp_path / "ok.pt")
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.ones(2, 2))


@pytest.mark.parametrize(("obj", "type_name"), [
    (Payload(), "setattr"),  # a __reduce__ that would call code on load
    (Marker(), "test_trust.Marker"),  # an arbitrary class instance
])
def test_checkpoint_with_pickled_object_is_refused(tmp_path: Path, obj: object, type_name: str) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(1)}, "extra": obj}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_torch_load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: contains a pickled object of type ")
    assert type_name in message
    assert "only tensors and primitive containers load" in message
    assert Marker.called is False


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "missing"])
def test_damaged_checkpoint_is_reported(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.arange(1000.0)}, path)
    raw = path.read_bytes()
    {"truncated": lambda: path.write_bytes(raw[: len(raw) // 2]), "empty": lambda: path.write_bytes(b""),
     "garbage": lambda: path.write_bytes(b"not a checkpoint"), "missing": path.unlink}[damage]()
    with pytest.raises(CorruptCheckpointError, match=str(path)) as info:
        safe_torch_load(path)
    assert isinstance(info.value, InputError)


def test_override_file_alone_is_a_clear_error(tmp_path):
    override = tmp_path / "evaluate.json"
    override.write_text('{"validate#handlers": []}')
    with pytest.raises(InputError, match=r"evaluate.json: key 'validate#handlers' overrides an entry that no earlier"):
        load_config(override)
