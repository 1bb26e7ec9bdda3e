"""medseg's own bundle expectations, beyond MONAI's schema: named warnings that never fail a bundle.

MONAI's metadata schema (:mod:`medseg.bundle.schema`) decides whether a bundle is valid. A
bundle can be valid and still be less useful than it should be; each such finding is a
:class:`LintWarning` with a stable code, reported by ``medseg bundle verify`` without failing it:

=============  ==================================================================================
code           finding
=============  ==================================================================================
MEDSEG-W001    missing changelog (or the bundle's version is not one of its entries)
MEDSEG-W002    missing name
MEDSEG-W003    a tensor of a ``*_data_format`` has no ``channel_def``
MEDSEG-W004    a tensor of a ``*_data_format`` has no ``is_patch_data``
MEDSEG-W005    a tensor's ``dtype`` is not a PyTorch dtype name
MEDSEG-W006    ``channel_def`` does not define one entry per channel
MEDSEG-W007    ``optional_packages_version`` (deprecated; MONAI reads ``required_packages_version``)
MEDSEG-W008    the bundle needs a newer medseg than the one installed (or medseg is not installed)
MEDSEG-W009    no ``large_files.yml`` listing the weights with their hashes
=============  ==================================================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["LintWarning", "lint_metadata", "lint_bundle", "medseg_requirement"]

_DTYPES = {"float16", "float32", "float64", "bfloat16", "uint8", "int8", "int16", "int32", "int64", "bool",
           "complex64", "complex128"}


@dataclass(frozen=True)
class LintWarning:
    """One finding: a stable ``code`` (``MEDSEG-Wnnn``) and a message naming the field."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.message}"


def medseg_requirement(metadata: dict[str, Any]) -> str | None:
    """The medseg version a bundle states it needs (``required_packages_version`` or the deprecated field)."""
    for field in ("required_packages_version", "optional_packages_version"):
        packages = metadata.get(field)
        if isinstance(packages, dict) and "medseg" in packages:
            return str(packages["medseg"])
    return None


def lint_metadata(metadata: dict[str, Any], installed_medseg: str | None = "auto") -> list[LintWarning]:
    """Every medseg warning about ``metadata`` (a parsed ``metadata.json``).

    Args:
        metadata: the metadata dict.
        installed_medseg: the medseg version to compare the bundle's requirement with; ``"auto"``
            reads the installed distribution, ``None`` means medseg is not installed.
    """
    out: list[LintWarning] = []
    changelog = metadata.get("changelog")
    if not isinstance(changelog, dict) or not changelog:
        out.append(LintWarning("MEDSEG-W001", "missing changelog (a {version: change} object)"))
    elif str(metadata.get("version")) not in changelog:
        out.append(LintWarning("MEDSEG-W001", f"missing changelog entry for version {metadata.get('version')!r}"))
    if not isinstance(metadata.get("name"), str) or not metadata["name"].strip():
        out.append(LintWarning("MEDSEG-W002", "missing name"))
    for where, tensor in _tensors(metadata):
        out.extend(_lint_tensor(where, tensor))
    if "optional_packages_version" in metadata:
        out.append(LintWarning("MEDSEG-W007", "optional_packages_version is deprecated: MONAI reads "
                                              "required_packages_version"))
    needed = medseg_requirement(metadata)
    if needed is not None:
        out.extend(_lint_medseg_version(needed, _installed() if installed_medseg == "auto" else installed_medseg))
    return out


def lint_bundle(root: str | Path, metadata: dict[str, Any], installed_medseg: str | None = "auto",
                ) -> list[LintWarning]:
    """:func:`lint_metadata` plus the bundle-level findings (``large_files.yml``)."""
    out = lint_metadata(metadata, installed_medseg)
    if not (Path(root) / "large_files.yml").is_file():
        out.append(LintWarning("MEDSEG-W009", "no large_files.yml (weights with their hashes)"))
    return out


def _tensors(metadata: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for fmt_key, fmt in metadata.items():
        if not (fmt_key.endswith("_data_format") and isinstance(fmt, dict)):
            continue
        for part in ("inputs", "outputs", "post_processed_outputs"):
            for name, tensor in (fmt.get(part) or {}).items():
                if isinstance(tensor, dict):
                    yield f"{fmt_key}/{part}/{name}", tensor


def _lint_tensor(where: str, tensor: dict[str, Any]) -> list[LintWarning]:
    out = []
    channel_def = tensor.get("channel_def")
    if channel_def is None:
        out.append(LintWarning("MEDSEG-W003", f"{where}: missing channel_def"))
    elif isinstance(channel_def, dict) and isinstance(tensor.get("num_channels"), int) \
            and len(channel_def) != tensor["num_channels"]:
        out.append(LintWarning("MEDSEG-W006", f"{where}: channel_def has {len(channel_def)} entries for "
                                              f"num_channels {tensor['num_channels']}"))
    if "is_patch_data" not in tensor:
        out.append(LintWarning("MEDSEG-W004", f"{where}: missing is_patch_data"))
    if isinstance(tensor.get("dtype"), str) and tensor["dtype"] not in _DTYPES:
        out.append(LintWarning("MEDSEG-W005", f"{where}: dtype {tensor['dtype']!r} is not a PyTorch dtype name"))
    return out


def _installed() -> str | None:
    try:
        return version("medseg")
    except PackageNotFoundError:
        return None


def _lint_medseg_version(needed: str, installed: str | None) -> list[LintWarning]:
    from packaging.version import InvalidVersion, Version

    if installed is None:
        return [LintWarning("MEDSEG-W008", f"the bundle needs medseg {needed}, which is not installed "
                                           f"(pip install 'medseg>={needed}')")]
    try:
        older = Version(installed) < Version(needed)
    except InvalidVersion:
        return [LintWarning("MEDSEG-W008", f"cannot compare installed medseg {installed!r} with the bundle's "
                                           f"{needed!r}")]
    if older:
        return [LintWarning("MEDSEG-W008", f"the bundle needs medseg {needed}, installed is {installed} "
                                           f"(pip install -U 'medseg>={needed}')")]
    return []
