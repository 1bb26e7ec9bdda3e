"""A bundle names no folder of the machine it was made on, and runs unchanged after being copied elsewhere."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from medseg.bundle.large_files import check_large_files, read_large_files, write_large_files
from medseg.bundle.template import BundleParams, write_bundle
from medseg.errors import InputError
from medseg.plan.network import build_network
from tests.bundle.conftest import HAS_FIRE, REPO, monai_bundle

TINY = BundleParams(name="tiny", channels=(8, 16, 32), strides=(2, 2), patch_size=(16, 16, 16), samples_per_case=1)


def absolute_paths(bundle: Path, *machine_dirs: Path) -> list[str]:
    """``file: path`` for every occurrence of a machine folder (or of the home folder) in the bundle's files."""
    needles = {str(d) for d in machine_dirs} | {str(Path.home())}
    found = []
    for f in sorted(p for p in bundle.rglob("*") if p.is_file()):
        text = f.read_bytes().decode("latin-1")
        found += [f"{f.relative_to(bundle)}: {n}" for n in needles if n in text]
        if f.suffix in (".json", ".yml", ".md", ".txt", ".conf") or f.name == "LICENSE":
            found += [f"{f.relative_to(bundle)}: {m}" for m in re.findall(r"[\"'\s(`](/(?:tmp|home|work|root)/\S+)", text)]
    return found


def make_bundle(root: Path) -> Path:
    write_bundle(root, TINY)
    torch.manual_seed(0)
    torch.save(build_network(3, channels=TINY.channels, strides=TINY.strides).state_dict(), root / "models" / "model.pt")
    write_large_files(root)
    return root


def test_large_files_lists_the_weights_with_their_hash(tmp_path):
    import hashlib

    bundle = make_bundle(tmp_path / "b")
    [entry] = read_large_files(bundle)
    digest = hashlib.sha256((bundle / "models" / "model.pt").read_bytes()).hexdigest()
    assert entry == {"path": "models/model.pt", "url": "", "hash_val": digest, "hash_type": "sha256"}
    assert check_large_files(bundle) == "1 file(s) match their hashes"
    from monai.apps.utils import check_hash  # MONAI reads the same hash

    assert check_hash(str(bundle / "models" / "model.pt"), entry["hash_val"], entry["hash_type"])
    (bundle / "models" / "model.pt").write_bytes(b"tampered")
    with pytest.raises(InputError, match=r"models/model.pt: sha256 is [0-9a-f]{64}, large_files.yml says"):
        check_large_files(bundle)


def test_model_card_and_data_licence(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    card = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    for section in ("## Intended use", "## Data", "## Evaluation", "## Limitations", "## Installation"):
        assert section in card
    assert "pip install \"medseg>=" in card and "torchrun --nproc_per_node N -m monai.bundle run" in card
    assert "medseg synth" in (bundle / "docs" / "data_license.txt").read_text(encoding="utf-8")


@pytest.mark.skipif(not HAS_FIRE, reason="python -m monai.bundle needs the fire package")
def test_copied_bundle_runs_inference_unchanged(tmp_path, tiny_dataset):
    made = make_bundle(tmp_path / "made")
    assert absolute_paths(made, tmp_path, REPO) == []
    moved = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(made, moved)
    shutil.rmtree(made)
    monai_bundle("run", moved, config_file="configs/inference.json", dataset_dir=str(tiny_dataset / "imagesTs"),
                 patch_size=[16, 16, 16])
    assert sorted(p.name for p in (moved / "eval").iterdir()) == ["case_006_seg.nii.gz", "case_007_seg.nii.gz"]
