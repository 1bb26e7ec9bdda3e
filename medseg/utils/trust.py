"""Safe loading of configs and checkpoints that come from outside the project.

A MONAI bundle config is code: a ``"$..."`` string is evaluated as Python, a ``"_target_"`` names
any importable callable (``"os.system"`` included) that the parser calls with the config's
arguments, and ``"%file#key"`` pulls content from another file. A pickled checkpoint is code too.
Both are only safe from a source you trust, so by default:

- :func:`load_config` refuses ``$`` expressions, ``_target_`` values outside an allow-list of
  namespaces (:data:`ALLOWED_TARGET_PREFIXES`, minus the callables in :data:`DENIED_TARGETS`
  that run commands, download, unpickle or run other configs), debug modes, and arguments
  that switch unpickling on (``weights_only: false``, ``allow_pickle: true``). ``@`` references
  and ``%`` macros are allowed (a macro's file is checked too). ``trusted=True`` skips all this.
- :func:`safe_torch_load` loads with ``weights_only=True``: tensors and primitive containers
  only; anything else is refused with the offending type named.

Example::

    parser = load_config("bundle/configs/inference.json")       # InputError if unsafe
    net = parser.get_parsed_content("network_def")
    state = safe_torch_load("bundle/models/model.pt")
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.utils.safe_load import CorruptCheckpointError, UnsafeCheckpointError, first_line, safe_torch_load

__all__ = [
    "ALLOWED_TARGET_PREFIXES",
    "DENIED_TARGETS",
    "UnsafeConfigError",
    "UnsafeCheckpointError",
    "CorruptCheckpointError",
    "load_config",
    "check_config",
    "check_target",
    "safe_torch_load",
]

#: ``_target_`` namespaces allowed from untrusted configs (matched on the written path *and* on
#: the resolved object's own module, so re-exports and ``pkg.mod.os.system`` tricks fail).
ALLOWED_TARGET_PREFIXES: tuple[str, ...] = (
    "medseg.", "monai.", "torch.nn.", "torch.optim.", "torch.utils.data.", "ignite.",
)

#: Callables inside the allowed namespaces that are still refused: they run commands or other
#: configs, import arbitrary names, download or extract archives, or load pickles/TorchScript.
DENIED_TARGETS: tuple[str, ...] = (
    "monai.bundle",  # ConfigParser, run, load, download, workflows: would run another config
    "monai.utils.module",  # optional_import, instantiate, locate: import anything
    "monai.utils.misc.run_cmd",
    "monai.utils.misc.save_obj",
    "monai.apps.utils",  # download_url, extractall, download_and_extract
    "monai.apps.datasets",  # download and extract archives
    "monai.apps.mmars",  # download + pickle load
    "monai.apps.auto3dseg",  # run subprocesses, load pickled algorithms
    "monai.apps.nnunet",  # run subprocesses
    "monai.auto3dseg",  # algo_from_pickle
    "monai.fl",  # run bundles
    "monai.data.torchscript_utils",  # torch.jit.load
    "monai.networks.utils.convert_to_",  # TorchScript / TensorRT / ONNX loading
    "medseg.cli",
    "medseg.utils.trust",
)

_UNSAFE_ARGS = {"weights_only": False, "allow_pickle": True, "trust_remote_code": True}
# torch's weights-only unpickler messages for objects it refuses (other messages mean damaged bytes)
_SEP = "::"  # monai.bundle.utils.ID_SEP_KEY


class UnsafeConfigError(InputError):
    """A config holds code (``$`` expressions, disallowed ``_target_``) and was not trusted."""


def load_config(path_or_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], trusted: bool = False,
                ) -> Any:
    """Read one config file or several (later ones override earlier keys) into a ``ConfigParser``.

    Args:
        path_or_paths: ``.json`` / ``.yaml`` / ``.yml`` file(s), MONAI bundle syntax.
        trusted: skip the safety checks (the user vouches for the files' source).

    Returns:
        a ``monai.bundle.ConfigParser`` holding the merged, not yet instantiated config.

    Raises:
        InputError: a file is missing or unreadable.
        UnsafeConfigError: (``trusted=False``) every unsafe entry, each as
            ``FILE: key 'a::b': PROBLEM: VALUE``.
    """
    from monai.bundle import ConfigParser
    from monai.bundle.utils import merge_kv

    paths = [Path(path_or_paths)] if isinstance(path_or_paths, (str, os.PathLike)) else [Path(p) for p in path_or_paths]
    if not paths:
        raise InputError("load_config: no config file given")
    contents = [_read_config(p) for p in paths]
    if not trusted:
        problems = [msg for p, content in zip(paths, contents, strict=True) for msg in check_config(content, p)]
        if problems:
            names = ", ".join(str(p) for p in paths)
            raise UnsafeConfigError(f"refusing to load {names}: it holds code that runs when parsed; pass the trust "
                                    "flag only if you trust where it came from", problems=problems)
    merged = ConfigParser(config={})
    for path, content in zip(paths, contents, strict=True):
        for key, value in content.items():
            try:
                merge_kv(merged, key, value)
            except (KeyError, IndexError, TypeError) as exc:
                raise InputError(f"{path}: key {key!r} overrides an entry that no earlier config defines ({exc}); "
                                 "load it together with the config it extends") from None
    return ConfigParser(config=merged.get())


def check_config(content: Any, source: str | os.PathLike[str] = "<config>", _seen: set[Path] | None = None,
                 ) -> list[str]:
    """Every unsafe entry of a parsed config, as ``SOURCE: key 'a::b': problem: value`` lines."""
    seen = _seen if _seen is not None else set()
    problems: list[str] = []
    for key_path, value in _walk(content, ()):
        where = f"{source}: key '{_SEP.join(key_path) or '<root>'}'"
        if isinstance(value, str) and value.startswith("$"):
            problems.append(f"{where}: '$' expression (evaluated as Python): {_short(value)}")
        elif isinstance(value, str) and value.startswith("%"):
            problems.extend(_check_macro(value, where, seen))
        elif isinstance(value, dict):
            if "_target_" in value:
                reason = check_target(value["_target_"])
                if reason:
                    problems.append(f"{where}: _target_ {value['_target_']!r} {reason}")
            if value.get("_mode_") == "debug" or value.get("_debug_"):
                problems.append(f"{where}: debug mode (starts a debugger) is not allowed")
            for arg, bad in _UNSAFE_ARGS.items():
                if arg in value and value[arg] is bad:
                    problems.append(f"{where}: argument {arg}={value[arg]!r} turns on unpickling or remote code")
    return problems


def check_target(target: Any) -> str | None:
    """Why ``target`` may not be a ``_target_`` from an untrusted config, or ``None`` if it may."""
    if not isinstance(target, str) or not target:
        return "is not a class or function name"
    path = target if "." in target else _monai_short_name(target)
    if path is None:
        return "is not a known MONAI component (use its full module path)"
    parts = path.split(".")
    if any(not p.isidentifier() or p.startswith("_") for p in parts):
        return "has a private or invalid path component"
    if not _allowed(path):
        return f"is outside the allowed namespaces {', '.join(p.rstrip('.') for p in ALLOWED_TARGET_PREFIXES)}"
    if _denied(path):
        return "is a denied callable (runs commands or configs, downloads, or loads pickles)"
    obj = _resolve(parts)
    if isinstance(obj, str):
        return obj
    if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
        return f"resolves to a {type(obj).__name__}, not a class or function"
    canonical = f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', '')}"
    if not _allowed(canonical) or _denied(canonical):
        return f"resolves to {canonical}, which is not allowed"
    return None


# ---------------------------------------------------------------------------------------------


def _read_config(path: Path) -> dict[str, Any]:
    from monai.bundle import ConfigParser

    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise InputError(f"{path}: unsupported config type {path.suffix!r} (use .json, .yaml or .yml)")
    try:
        content = ConfigParser.load_config_file(str(path))
    except Exception as exc:  # json/yaml raise many types
        raise InputError(f"{path}: not a readable config: {first_line(str(exc))}") from None
    if not isinstance(content, dict):
        raise InputError(f"{path}: a config must hold a mapping at the top level, got {type(content).__name__}")
    return content


def _walk(node: Any, key_path: tuple[str, ...]) -> Iterable[tuple[tuple[str, ...], Any]]:
    yield key_path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, (*key_path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, (*key_path, str(i)))


def _check_macro(value: str, where: str, seen: set[Path]) -> list[str]:
    file_part = re.split(r"::|#", value[1:], maxsplit=1)[0]
    if not file_part:
        return []  # a macro into the same config: its content is checked where it is
    target = Path(file_part)
    if target.resolve() in seen:
        return []
    seen.add(target.resolve())
    try:
        content = _read_config(target)
    except InputError as exc:
        return [f"{where}: macro {_short(value)} names an unreadable file: {exc}"]
    return check_config(content, target, seen)


def _monai_short_name(name: str) -> str | None:
    from monai.bundle.config_item import ComponentLocator

    module = ComponentLocator().get_component_module_name(name)
    if isinstance(module, list):
        module = module[0]  # what monai.bundle picks
    return f"{module}.{name}" if module else None


def _allowed(path: str) -> bool:
    return any(path.startswith(prefix) for prefix in ALLOWED_TARGET_PREFIXES)


def _denied(path: str) -> bool:
    # an entry ending in "_" is a name prefix; any other entry matches itself and what lies below it
    return any(path.startswith(d) if d.endswith("_") else path == d or path.startswith(d + ".")
               for d in DENIED_TARGETS)


def _resolve(parts: list[str]) -> Any:
    """Import the longest module prefix, then walk attributes; never leave the allowed namespaces."""
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        if not _allowed(name + "."):
            break
        try:
            obj: Any = importlib.import_module(name)
        except Exception:  # not a module, or an optional dependency missing
            continue
        for attr in parts[cut:]:
            if inspect.ismodule(obj) and not _allowed(obj.__name__ + "."):
                return f"reaches module {obj.__name__}, outside the allowed namespaces"
            if not hasattr(obj, attr):
                return f"cannot be found ({name} has no {attr!r})"
            obj = getattr(obj, attr)
        if inspect.ismodule(obj):
            return f"resolves to module {obj.__name__}, not a class or function"
        return obj
    return "cannot be imported"


def _short(value: str, limit: int = 120) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")
