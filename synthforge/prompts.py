"""Jinja2 prompt templates from ``prompts/*.j2``.

Templates are compiled from the files users edit; teacher outputs and seed text are passed in
as *values* and never compiled as template source. Undefined variables are errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import SandboxedEnvironment

from synthforge.builtin import builtin_path
from synthforge.errors import UserError
from synthforge.files import read_text
from synthforge.hashing import stable_hash

TEMPLATE_SUFFIX = ".j2"


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """A compiled template plus the file it came from and the hash of its text."""

    name: str
    path: Path
    source: str
    sha256: str
    compiled: jinja2.Template
    variables: frozenset[str] = frozenset()  # the names it uses that it doesn't set itself

    def render(self, **values: Any) -> str:
        """Render with ``values``; a missing variable raises :class:`UserError` naming the file."""
        try:
            return self.compiled.render(**values).strip()
        except jinja2.UndefinedError as exc:
            raise UserError(f"{self.path}: template uses an undefined variable: {exc.message}") from None
        except jinja2.TemplateError as exc:  # a sandbox violation (SecurityError) too
            raise UserError(f"{self.path}: template failed to render: {exc}") from None


def _environment() -> jinja2.Environment:
    """A sandboxed environment: a template can't reach Python internals (``cycler.__init__.__globals__``)."""
    return SandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def load_template(ref: str, prompts_dir: Path) -> PromptTemplate:
    """Load template ``ref``: a file path, or a name (``critique`` → ``critique.j2``) in ``prompts_dir``, else
    among the built-in templates."""
    candidates = [Path(ref)] if ref.endswith(TEMPLATE_SUFFIX) else []
    for folder in (prompts_dir, builtin_path("prompts")):
        candidates += [folder / f"{ref}{TEMPLATE_SUFFIX}", folder / ref]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise UserError(
            f"prompt template {ref!r} not found (looked for {prompts_dir / (ref + TEMPLATE_SUFFIX)} and among the "
            "built-in templates)"
        )
    source = read_text(path, "prompt template")
    environment = _environment()
    try:
        parsed = environment.parse(source)
        compiled = environment.from_string(parsed)
    except jinja2.TemplateSyntaxError as exc:
        raise UserError(f"{path}:{exc.lineno}: template syntax error: {exc.message}") from None
    if list(jinja2.meta.find_referenced_templates(parsed)):
        raise UserError(f"{path}: a prompt template can't include, import or extend other templates")
    variables = frozenset(jinja2.meta.find_undeclared_variables(parsed)) - set(environment.globals)
    return PromptTemplate(
        name=path.stem, path=path, source=source, sha256=stable_hash(source), compiled=compiled, variables=variables
    )
