"""Check JSON-like data against a JSON Schema, with errors that name where the problem is (one line)."""

from __future__ import annotations

from typing import Any

from synthforge.errors import UserError


def first_violation(value: Any, schema: dict[str, Any]) -> str | None:
    """The first way ``value`` breaks ``schema``, as ``$.path: message``; None when it conforms."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    message = error.message if len(error.message) <= 200 else error.message[:200] + "…"
    return f"{error.json_path}: {message}"


def check_json(value: Any, schema: dict[str, Any], where: str) -> None:
    """Raise a one-line :class:`UserError` naming ``where`` and the key path when ``value`` breaks ``schema``."""
    problem = first_violation(value, schema)
    if problem is not None:
        raise UserError(f"{where}: {problem}")
