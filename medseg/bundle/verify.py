"""Bundle verification with MONAI's own tools, offline.

:func:`verify_bundle` runs, in order: the layout check (files the MONAI Bundle Specification
asks for), a safety check (every config loads with :func:`medseg.utils.trust.load_config`, i.e.
holds no ``$`` code), ``monai.bundle.verify_metadata`` against medseg's offline equivalent of
MONAI's published schema (:mod:`medseg.bundle.schema`; nothing is downloaded), the hashes of
``large_files.yml``, ``monai.bundle.verify_net_in_out``, ``monai.bundle.ckpt_export`` (writes
``models/model.ts``) and a TorchScript-vs-eager comparison on a random input of the metadata's
input shape. :func:`lint_warnings` adds medseg's own named warnings (:mod:`medseg.bundle.lint`),
which never fail a bundle.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medseg.bundle.large_files import LARGE_FILES, check_large_files
from medseg.bundle.lint import LintWarning, lint_bundle
from medseg.bundle.schema import SCHEMA_FILE, write_schema
from medseg.errors import InputError

__all__ = ["CheckResult", "verify_bundle", "lint_warnings", "export_torchscript", "torchscript_max_difference",
           "REQUIRED_FILES"]

logger = logging.getLogger(__name__)
REQUIRED_FILES = ("configs/metadata.json", "configs/inference.json", "LICENSE", "docs/README.md")


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    message: str
    seconds: float


def _bundle_files(root: Path) -> tuple[str, str, str]:
    meta, infer = root / "configs" / "metadata.json", root / "configs" / "inference.json"
    schema = root / SCHEMA_FILE
    if not schema.is_file():
        write_schema(schema)
    return str(meta), str(infer), str(schema)


def export_torchscript(bundle_dir: str | Path, filepath: str | Path | None = None,
                       overrides: Mapping[str, Any] | None = None) -> Path:
    """``monai.bundle.ckpt_export`` of ``network_def`` with ``models/model.pt`` into ``models/model.ts``."""
    from monai.bundle import ckpt_export

    root = Path(bundle_dir).resolve()
    meta, infer, _ = _bundle_files(root)
    out = Path(filepath) if filepath else root / "models" / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(out), ckpt_file=str(root / "models" / "model.pt"),
                meta_file=meta, config_file=infer, bundle_root=str(root), **dict(overrides or {}))
    _strip_debug_info(out)
    return out


def _strip_debug_info(path: Path) -> None:
    """Drop TorchScript's ``*.debug_pkl`` records (source ranges naming the absolute paths of this machine's
    Python files): the archive then holds no path of the machine that made it, and loads and runs the same."""
    import os
    import zipfile

    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if not info.filename.endswith(".debug_pkl"):
                dst.writestr(info, src.read(info.filename))
    os.replace(tmp, path)


def torchscript_max_difference(bundle_dir: str | Path, seed: int = 0,
                               overrides: Mapping[str, Any] | None = None) -> float:
    """Largest |TorchScript - eager| logit on a random input of the metadata's input shape."""
    from medseg.utils.trust import load_config, safe_torch_load

    root = Path(bundle_dir).resolve()
    parser = load_config(root / "configs" / "inference.json")
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser.update(dict(overrides or {}))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(safe_torch_load(root / "models" / "model.pt"))
    net.eval()
    fmt = parser.get("_meta_#network_data_format#inputs#image")
    shape = [int(s) for s in fmt["spatial_shape"]]
    x = torch.rand((1, int(fmt["num_channels"]), *shape), generator=torch.Generator().manual_seed(seed))
    scripted = torch.jit.load(str(root / "models" / "model.ts"), map_location="cpu")
    with torch.no_grad():
        return float((scripted(x) - net(x)).abs().max())


def verify_bundle(bundle_dir: str | Path, device: str = "cpu", tolerance: float = 1e-4, export: bool = True,
                  overrides: Mapping[str, Any] | None = None) -> list[CheckResult]:
    """Run every check; each result says what passed or, for a failure, what is wrong.

    ``overrides`` (config id -> value, e.g. ``{"pipeline#raw#network#filters": [8, 16, 32]}``) are applied
    the way ``python -m monai.bundle ... --id value`` applies them.
    """
    root = Path(bundle_dir).resolve()
    if not (root / "configs").is_dir():
        raise InputError(f"{root}: not a MONAI bundle (no configs/ folder)")
    results: list[CheckResult] = []

    def check(name: str, fn: Callable[[], str]) -> bool:
        t0 = time.perf_counter()
        try:
            msg, ok = fn(), True
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reported check
            msg, ok = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}", False
        results.append(CheckResult(name, ok, msg, time.perf_counter() - t0))
        return ok

    meta, infer, _ = _bundle_files(root)
    check("layout", lambda: _layout(root))
    check("safe configs", lambda: _safe_configs(root))
    check("verify_metadata", lambda: _verify_metadata(meta))
    if (root / LARGE_FILES).is_file():
        check("large_files", lambda: check_large_files(root))
    check("verify_net_in_out", lambda: _verify_net(meta, infer, device, overrides or {}))
    has_weights = (root / "models" / "model.pt").is_file()
    if export and has_weights and check("ckpt_export", lambda: f"wrote {export_torchscript(root, overrides=overrides)}"):
        check("torchscript == eager", lambda: _compare(root, tolerance, overrides or {}))
    elif export and not has_weights:
        results.append(CheckResult("ckpt_export", False, f"{root / 'models' / 'model.pt'} not found (train the "
                                   "bundle or export a run first)", 0.0))
    return results


def _layout(root: Path) -> str:
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise InputError(f"missing {', '.join(missing)}")
    return "configs, LICENSE and docs present"


def _safe_configs(root: Path) -> str:
    from monai.bundle import ConfigParser

    from medseg.utils.trust import check_config

    files = sorted(p for p in (root / "configs").glob("*.json") if p.name != "metadata.json")
    problems = [msg for f in files for msg in check_config(ConfigParser.load_config_file(str(f)), f)]
    if problems:
        raise InputError("configs hold code: " + "; ".join(problems))
    return f"{len(files)} configs hold no code ($ expressions, unsafe _target_)"


def lint_warnings(bundle_dir: str | Path, installed_medseg: str | None = "auto") -> list[LintWarning]:
    """medseg's named warnings about a bundle (:mod:`medseg.bundle.lint`); ``[]`` without a readable metadata.json."""
    meta = Path(bundle_dir) / "configs" / "metadata.json"
    try:
        metadata = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return lint_bundle(bundle_dir, metadata, installed_medseg) if isinstance(metadata, dict) else []


def _verify_metadata(meta: str) -> str:
    import importlib.util

    if importlib.util.find_spec("jsonschema") is None:
        raise RuntimeError("MONAI's verify_metadata needs the 'jsonschema' package (pip install jsonschema)")
    from monai.bundle import verify_metadata

    from medseg.bundle.schema import validate_metadata

    problems = validate_metadata(json.loads(Path(meta).read_text(encoding="utf-8")))
    if problems:
        raise InputError("metadata.json does not follow MONAI's schema: " + "; ".join(problems))
    with tempfile.TemporaryDirectory() as tmp:  # always medseg's schema, whatever copy the bundle ships
        verify_metadata(meta_file=meta, filepath=write_schema(Path(tmp) / "meta_schema.json"))
    return "metadata valid against MONAI's meta_schema_20240725 (offline equivalent)"


def _verify_net(meta: str, infer: str, device: str, overrides: Mapping[str, Any]) -> str:
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=infer, device=device, **dict(overrides))
    return "network input/output channels and dtype match network_data_format"


def _compare(root: Path, tolerance: float, overrides: Mapping[str, Any]) -> str:
    diff = torchscript_max_difference(root, overrides=overrides)
    if not diff <= tolerance:
        raise ValueError(f"TorchScript and eager outputs differ by {diff:.3g} > {tolerance:g}")
    return f"max |TorchScript - eager| = {diff:.3g} <= {tolerance:g}"
