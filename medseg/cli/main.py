"""The ``medseg`` console script: one sub-command per module in :mod:`medseg.cli`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from medseg import __version__
from medseg.errors import InputError
from medseg.utils.quiet import silence_third_party_notices

__all__ = ["main", "build_parser", "COMMANDS"]

# command name -> module defining ``add_arguments(parser)`` and ``run(args) -> int``
COMMANDS: dict[str, str] = {
    "synth": "medseg.cli.synth",
    "check": "medseg.cli.check",
    "plan": "medseg.cli.plan",
    "preprocess": "medseg.cli.preprocess",
    "train": "medseg.cli.train",
    "predict": "medseg.cli.predict",
    "evaluate": "medseg.cli.evaluate",
    "bundle": "medseg.cli.bundle",
    "crossval": "medseg.cli.crossval",
    "study": "medseg.cli.study",
    "robustness": "medseg.cli.robustness",
}


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="medseg", description="3D medical image segmentation with MONAI.")
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or "").strip().splitlines()[0]
        cmd = sub.add_parser(name, help=doc, description=(module.__doc__ or "").strip(),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show full tracebacks and debug logging")
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "git", "matplotlib", "PIL", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    silence_third_party_notices()
    try:
        return int(args._run(args) or 0)
    except InputError as exc:
        if debug:
            raise
        print(f"medseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # internal error: exit 1, traceback only with --debug
        if debug:
            raise
        print(f"medseg {args.command}: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
