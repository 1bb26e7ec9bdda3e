"""JSON schema of a MONAI bundle's ``configs/metadata.json``, shipped offline.

:data:`META_SCHEMA` accepts exactly what MONAI's published ``meta_schema_20240725.json`` accepts
(the schema MONAI's model zoo names in ``metadata["schema"]``): the same JSON Schema dialect
(2019-09, so ``jsonschema`` applies the same keyword semantics), the same required top-level
fields, the same types, and the same nested rules:

- ``network_data_format`` -- and any other ``<name>_data_format`` key (one per network) -- is an
  object with ``inputs`` and ``outputs`` (required) and ``post_processed_outputs`` (optional),
  each mapping names to an argument;
- an argument is a number, a string, a boolean, or a tensor description: an object with
  ``type``, ``format`` (strings), ``num_channels`` (integer), ``spatial_shape`` (list of integers
  or strings such as ``"8*n"``), ``dtype`` (string) and ``value_range`` (list of numbers), and
  optionally ``is_patch_data`` (boolean) and ``channel_def`` (object).

It is written in this module, not downloaded: MONAI's ``verify_metadata`` only downloads the
schema when the file given as ``filepath`` does not exist, so :func:`write_schema` writes it to
``docs/meta_schema.json`` and verification never touches the network. medseg's own, stricter
expectations (a changelog, a name, channel definitions...) are not schema rules: they are the
named warnings of :mod:`medseg.bundle.lint`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medseg.utils.files import atomic_write_text

__all__ = ["MONAI_SCHEMA_URL", "META_SCHEMA", "SCHEMA_FILE", "REQUIRED_FIELDS", "write_schema", "validate_metadata"]

#: the published schema this one is equivalent to (named in metadata so MONAI tools recognise it)
MONAI_SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
#: where a bundle keeps the local copy, relative to the bundle root
SCHEMA_FILE = "docs/meta_schema.json"
#: top-level fields every metadata.json must have
REQUIRED_FIELDS = ("schema", "version", "monai_version", "pytorch_version", "numpy_version",
                   "required_packages_version", "task", "description", "authors", "copyright",
                   "network_data_format")

_STRING_FIELDS = {
    "schema": "URL of the metadata schema.",
    "version": "Version of the bundle.",
    "monai_version": "MONAI version the bundle was made with.",
    "pytorch_version": "PyTorch version the bundle was made with.",
    "numpy_version": "NumPy version the bundle was made with.",
    "task": "What the bundle does, in one line.",
    "description": "What the bundle is and does, in more words.",
    "authors": "Who made the bundle.",
    "copyright": "Copyright of the bundle.",
    "data_source": "Where the training data comes from or how to prepare it.",
    "data_type": "Format of the data (nibabel, dicom...).",
    "image_classes": "Meaning of the input channels.",
    "label_classes": "Meaning of the label channels, when there are labels.",
    "pred_classes": "Meaning of the prediction channels.",
    "intended_use": "What the bundle may be used for.",
}
_OBJECT_FIELDS = {
    "changelog": "Bundle version -> what changed.",
    "required_packages_version": "Packages the bundle needs beyond MONAI -> version.",
    "eval_metrics": "Metric name -> score reached.",
    "supported_apps": "Applications the bundle works with (e.g. monai-label).",
}

_TENSOR: dict[str, Any] = {
    "description": "A tensor (or MetaTensor) argument or result of the network.",
    "type": "object",
    "required": ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"],
    "properties": {
        "type": {"type": "string"},
        "format": {"type": "string"},
        "num_channels": {"type": "integer"},
        "spatial_shape": {"type": "array", "items": {"type": ["string", "integer"]}},
        "dtype": {"type": "string"},
        "value_range": {"type": "array", "items": {"type": "number"}},
        "is_patch_data": {"type": "boolean"},
        "channel_def": {"type": "object"},
    },
}
_ARGUMENT: dict[str, Any] = {
    "description": "A value passed to or returned by the network's forward pass.",
    "anyOf": [{"type": "number"}, {"type": "integer"}, {"type": "string"}, {"type": "boolean"},
              {"$ref": "#/$defs/tensor"}],
}
_NAMED_ARGUMENTS: dict[str, Any] = {"type": "object", "patternProperties": {"^.+$": {"$ref": "#/$defs/argument"}}}
_DATA_FORMAT: dict[str, Any] = {
    "description": "Inputs, outputs and (when post-processing changes them) post-processed outputs of a network.",
    "type": "object",
    "required": ["inputs", "outputs"],
    "properties": {"inputs": _NAMED_ARGUMENTS, "outputs": _NAMED_ARGUMENTS,
                   "post_processed_outputs": _NAMED_ARGUMENTS},
}

META_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2019-09/schema",
    "$id": "medseg/bundle/meta_schema.json",
    "title": "MONAI bundle metadata (offline equivalent of meta_schema_20240725.json)",
    "$defs": {"tensor": _TENSOR, "argument": _ARGUMENT, "data_format": _DATA_FORMAT},
    "type": "object",
    "required": list(REQUIRED_FIELDS),
    "properties": {
        **{k: {"description": d, "type": "string"} for k, d in _STRING_FIELDS.items()},
        **{k: {"description": d, "type": "object"} for k, d in _OBJECT_FIELDS.items()},
        "references": {"description": "Publications the bundle relies on.", "type": "array",
                       "items": {"type": "string"}},
        "network_data_format": {"$ref": "#/$defs/data_format"},
    },
    "patternProperties": {"^[_a-zA-Z0-9]+_data_format$": {"$ref": "#/$defs/data_format"}},
}


def write_schema(path: str | Path) -> Path:
    """Write :data:`META_SCHEMA` to ``path`` (atomically) and return the path."""
    p = Path(path)
    atomic_write_text(p, json.dumps(META_SCHEMA, indent=2) + "\n")
    return p


def validate_metadata(metadata: dict[str, Any]) -> list[str]:
    """Every schema violation of ``metadata``, as ``"<json path>: <message>"`` (empty when valid).

    Uses the validator class the schema's dialect names, as MONAI's ``verify_metadata`` does. Where
    an object fails to be an argument (``anyOf``), the messages are those of the tensor rules it
    breaks (``'num_channels' is a required property``) rather than "not valid under any of the
    given schemas".
    """
    from jsonschema.validators import validator_for

    validator = validator_for(META_SCHEMA)(META_SCHEMA)
    out = []
    for error in sorted(validator.iter_errors(metadata), key=lambda e: [str(p) for p in e.absolute_path]):
        causes = [c for c in error.context or [] if c.relative_schema_path and c.relative_schema_path[0] == _TENSOR_BRANCH]
        for e in (causes if error.validator == "anyOf" and isinstance(error.instance, dict) and causes else [error]):
            out.append(f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}")
    return list(dict.fromkeys(out))  # network_data_format matches a property and the *_data_format pattern


_TENSOR_BRANCH = _ARGUMENT["anyOf"].index({"$ref": "#/$defs/tensor"})
