"""Errors that mean "the user gave us something wrong" (exit code 2 at the CLI)."""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input or bad usage: a file, flag or value the user can fix.

    The message names the file or flag and the problem, on one line per problem. The CLI prints
    it without a traceback and exits with code 2.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        full = message if not self.problems else message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(full)
