"""The project's own JSON schema for MONAI bundle ``configs/metadata.json``.

MONAI's ``verify_metadata`` downloads the schema named in ``metadata["schema"]`` unless the file
given as ``filepath`` already exists. No machine of this project reaches the internet, so the
schema below -- written from the MONAI Bundle Specification (required fields, version strings,
``network_data_format`` with per-tensor type, format, channels, spatial shape, dtype, value range,
patch flag and channel definitions) -- is written to a local file and passed as ``filepath``:
MONAI then validates against it without any download.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medseg.utils.files import atomic_write_text

__all__ = ["MONAI_SCHEMA_URL", "META_SCHEMA", "SCHEMA_FILE", "write_schema"]

#: the schema URL MONAI's own bundles name (kept in metadata so MONAI tools elsewhere recognise it)
MONAI_SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
#: where a bundle keeps the local copy, relative to the bundle root
SCHEMA_FILE = "docs/meta_schema.json"

_VERSION = {"type": "string", "pattern": r"^\d+(\.\d+)*([.+-]?[0-9A-Za-z.+-]*)?$"}
_SHAPE_DIM = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "minLength": 1}]}
_TENSOR = {
    "type": "object",
    "required": ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data",
                 "channel_def"],
    "properties": {
        "type": {"type": "string", "enum": ["image", "probabilities", "tabular", "series", "tuples", "object",
                                            "points", "string", "boxes", "text", "keypoints"]},
        "format": {"type": "string", "minLength": 1},
        "modality": {"type": "string"},
        "num_channels": {"type": "integer", "minimum": 0},
        "spatial_shape": {"type": "array", "items": _SHAPE_DIM},
        "dtype": {"type": "string", "enum": ["float16", "float32", "float64", "bfloat16", "uint8", "int8",
                                             "int16", "int32", "int64", "bool"]},
        "value_range": {"type": "array", "maxItems": 2, "items": {"type": "number"}},
        "is_patch_data": {"type": "boolean"},
        "is_onehot": {"type": "boolean"},
        "channel_def": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

META_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "medseg/bundle/meta_schema.json",
    "title": "MONAI bundle metadata (medseg offline copy of the MONAI Bundle Specification)",
    "type": "object",
    "required": ["schema", "version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                 "required_packages_version", "name", "task", "description", "authors", "copyright",
                 "network_data_format"],
    "properties": {
        "schema": {"type": "string", "minLength": 1},
        "version": _VERSION,
        "changelog": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
        "monai_version": _VERSION,
        "pytorch_version": _VERSION,
        "numpy_version": _VERSION,
        "optional_packages_version": {"type": "object", "additionalProperties": {"type": "string"}},
        "required_packages_version": {"type": "object", "additionalProperties": {"type": "string"}},
        "name": {"type": "string", "minLength": 1},
        "task": {"type": "string", "minLength": 1},
        "description": {"type": "string", "minLength": 1},
        "authors": {"type": "string", "minLength": 1},
        "copyright": {"type": "string", "minLength": 1},
        "data_source": {"type": "string"},
        "data_type": {"type": "string"},
        "image_classes": {"type": "string"},
        "label_classes": {"type": "string"},
        "pred_classes": {"type": "string"},
        "eval_metrics": {"type": "object", "additionalProperties": {"type": ["number", "null", "string"]}},
        "intended_use": {"type": "string"},
        "references": {"type": "array", "items": {"type": "string"}},
        "network_data_format": {
            "type": "object",
            "required": ["inputs", "outputs"],
            "properties": {
                "inputs": {"type": "object", "minProperties": 1, "additionalProperties": _TENSOR},
                "outputs": {"type": "object", "minProperties": 1, "additionalProperties": _TENSOR},
            },
        },
    },
}


def write_schema(path: str | Path) -> Path:
    """Write :data:`META_SCHEMA` to ``path`` (atomically) and return the path."""
    p = Path(path)
    atomic_write_text(p, json.dumps(META_SCHEMA, indent=2) + "\n")
    return p
