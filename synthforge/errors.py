"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a file, a key, a path). The message names where the problem is."""


class TeacherError(RuntimeError):
    """A teacher failed to produce completions for a batch (retried, then recorded as a drop)."""
