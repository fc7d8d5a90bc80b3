"""Errors the command line shows to users as one line: what is wrong, where, and how to fix it."""

from __future__ import annotations


class VlpipeError(Exception):
    """A user-facing error. ``str(err)`` is a complete one-line message."""


class InputError(VlpipeError):
    """Bad input: a missing file, malformed JSON, wrong schema, bad flag value."""

    def __init__(self, path: object, problem: str, fix: str | None = None):
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        msg = f"{self.path}: {problem}"
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)


class ArtifactError(VlpipeError):
    """An artifact is missing, of the wrong kind or schema, or would be overwritten."""
