"""``large_files.yml``: the bundle's weights with their hashes, in the MONAI model-zoo format.

The model zoo keeps weights out of git and lists them in ``large_files.yml``::

    large_files:
      - path: "models/model.pt"
        url: ""
        hash_val: "<sha256 hex digest>"
        hash_type: "sha256"

``url`` is where the file can be downloaded (empty until the weights are published: the file
travels with the bundle); ``hash_val``/``hash_type`` are what MONAI's ``check_hash`` verifies.
Paths are relative to the bundle root.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.utils.files import atomic_write_text

__all__ = ["LARGE_FILES", "HASH_TYPE", "file_hash", "write_large_files", "read_large_files", "check_large_files"]

LARGE_FILES = "large_files.yml"
HASH_TYPE = "sha256"
_WEIGHT_SUFFIXES = (".pt", ".ts", ".onnx", ".pth", ".safetensors")


def file_hash(path: str | Path, hash_type: str = HASH_TYPE) -> str:
    """Hex digest of a file (``hash_type`` as MONAI's ``check_hash`` names it: md5, sha1, sha256, sha512)."""
    if hash_type not in ("md5", "sha1", "sha256", "sha512"):
        raise ValueError(f"hash_type must be md5, sha1, sha256 or sha512, got {hash_type!r}")
    digest = hashlib.new(hash_type)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_large_files(bundle_root: str | Path, url: str = "") -> Path:
    """List every weight file under ``models/`` with its hash in ``large_files.yml``; returns its path."""
    root = Path(bundle_root)
    weights = sorted(p for p in (root / "models").glob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    lines = ["large_files:"]
    for p in weights:
        rel = p.relative_to(root).as_posix()
        lines += [f'  - path: "{rel}"', f'    url: "{url}"', f'    hash_val: "{file_hash(p)}"',
                  f'    hash_type: "{HASH_TYPE}"']
    if not weights:
        lines[0] += " []"
    atomic_write_text(root / LARGE_FILES, "\n".join(lines) + "\n")
    return root / LARGE_FILES


def read_large_files(bundle_root: str | Path) -> list[dict[str, Any]]:
    """The entries of ``large_files.yml`` (each with path, url, hash_val, hash_type)."""
    import yaml

    path = Path(bundle_root) / LARGE_FILES
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    entries = (content or {}).get("large_files") if isinstance(content, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "path" in e for e in entries):
        raise InputError(f"{path}: expected 'large_files:' followed by a list of entries with a path")
    return entries


def check_large_files(bundle_root: str | Path) -> str:
    """Check that every listed file exists, sits inside the bundle, and has the listed hash."""
    root = Path(bundle_root).resolve()
    problems, checked = [], 0
    for entry in read_large_files(root):
        rel = str(entry["path"])
        target = (root / rel).resolve()
        if Path(rel).is_absolute() or root not in target.parents:
            problems.append(f"{rel}: not a path inside the bundle")
        elif not target.is_file():
            problems.append(f"{rel}: missing")
        elif entry.get("hash_val"):
            actual = file_hash(target, str(entry.get("hash_type") or "md5"))
            if actual != entry["hash_val"]:
                problems.append(f"{rel}: {entry.get('hash_type')} is {actual}, large_files.yml says {entry['hash_val']}")
            checked += 1
    if problems:
        raise InputError("large_files.yml: " + "; ".join(problems))
    return f"{checked} file(s) match their hashes"
