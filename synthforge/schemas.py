"""JSON Schemas of structured answers: loaded (inline or from a file), checked as JSON Schema before anything runs,
and used to parse and validate a teacher's answer (a schema violation is a reason, never a crash)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from synthforge.files import read_text
from synthforge.hashing import stable_hash
from synthforge.settings import SpecError

MAX_ERRORS = 3  # violations named in one reason
MAX_STARTS = 32  # places an embedded JSON value may start that are tried


@dataclass(frozen=True)
class SchemaSpec:
    """A JSON Schema (``schema``) with its hash and, when it came from a file, the file."""

    schema: dict[str, Any]
    sha256: str
    path: Path | None = None

    def properties(self) -> tuple[str, ...]:
        """Top-level properties of an object schema (none for other schemas)."""
        return tuple(self.schema.get("properties", {})) if self.schema.get("type") == "object" else ()

    def parse(self, text: str) -> tuple[Any, str | None]:
        """(the answer's JSON value, None) when it parses and validates; else (None, what is wrong)."""
        value, problem = parse_json(text)
        if problem is not None:
            return None, problem
        violations = validation_errors(self.schema, value)
        if violations:
            return None, "answer does not match the schema: " + "; ".join(violations)
        return value, None


def load_schema(value: Any, base_dir: Path | None, where: str) -> SchemaSpec:
    """A schema given inline (a mapping) or as a ``.json``/``.yaml`` file relative to ``base_dir``; one line when it
    is not a valid JSON Schema."""
    path = None
    if isinstance(value, str):
        path = Path(value).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise SpecError(f"{where}: schema file {value} not found")
        text = read_text(path, "schema")
        try:
            value = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise SpecError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
        where = str(path)
    if not isinstance(value, dict):
        raise SpecError(f"{where}: a JSON Schema is a mapping (e.g. {{type: object, properties: ...}})")
    problem = schema_defect(value)
    if problem is not None:
        raise SpecError(f"{where}: not a valid JSON Schema: {problem}")
    return SchemaSpec(schema=value, sha256=stable_hash(value), path=path)


def schema_defect(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a valid JSON Schema (2020-12 meta-schema), or None."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        return f"at {where}: {exc.message}"
    return ref_loop(schema)


_NOT_SCHEMAS = frozenset({"const", "enum", "default", "examples"})  # values here are data, not subschemas
_DEFINITIONS = ("$defs", "definitions")


def ref_loop(schema: dict[str, Any]) -> str | None:
    """A ``$ref`` loop no value can satisfy, or None: a schema that refers back to itself before it matches any
    input (``a → a``, or through ``allOf``) describes no JSON at all, and a grammar built from it matches nothing.
    Recursion that consumes input first (a tree's children under ``properties`` or ``items``) is fine, and so is
    an ``anyOf`` with a way out."""
    nodes: dict[str, dict[str, Any]] = {}
    children: dict[str, list[str]] = {}
    _collect(schema, "#", nodes, children)
    refs = {p: n["$ref"] for p, n in nodes.items() if isinstance(n.get("$ref"), str) and n["$ref"].startswith("#")}
    grounded: set[str] = set()
    changed = True
    while changed:  # least fixpoint: a node is grounded once everything it must also be is grounded
        changed = False
        for pointer, node in nodes.items():
            if pointer not in grounded and _grounds(pointer, node, refs, grounded):
                grounded.add(pointer)
                changed = True
    seen, todo = set(), ["#"]
    while todo:  # only what the schema can reach matters: an unused definition is harmless
        pointer = todo.pop()
        if pointer in seen or pointer not in nodes:
            continue
        seen.add(pointer)
        if pointer not in grounded:
            return f"at {pointer}: a $ref loop that never matches a value ({' -> '.join(_loop(pointer, refs))})"
        todo += children[pointer] + ([refs[pointer].rstrip("/") or "#"] if pointer in refs else [])
    return None


def _collect(node: dict[str, Any], pointer: str, nodes: dict, children: dict) -> None:
    nodes[pointer], children[pointer] = node, []
    for key, value in node.items():
        if key in _NOT_SCHEMAS:
            continue
        escaped = str(key).replace("~", "~0").replace("/", "~1")
        if key in _DEFINITIONS and isinstance(value, dict):
            for name, sub in value.items():
                if isinstance(sub, dict):  # reached through a $ref only
                    _collect(sub, f"{pointer}/{key}/{str(name).replace('~', '~0').replace('/', '~1')}", nodes, children)
            continue
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, sub in items:
            if isinstance(sub, dict):
                child = f"{pointer}/{escaped}" if index is None else f"{pointer}/{escaped}/{index}"
                children[pointer].append(child)
                _collect(sub, child, nodes, children)


def _grounds(pointer: str, node: dict[str, Any], refs: dict[str, str], grounded: set[str]) -> bool:
    def ok(target: str) -> bool:
        return target in grounded

    base = pointer.rstrip("/")
    if pointer in refs and not ok(refs[pointer].rstrip("/") or "#"):
        return False
    if isinstance(node.get("allOf"), list) and not all(ok(f"{base}/allOf/{i}") for i in range(len(node["allOf"]))):
        return False
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list) and not any(ok(f"{base}/{key}/{i}") for i in range(len(node[key]))):
            return False
    return True


def _loop(pointer: str, refs: dict[str, str]) -> list[str]:
    path = [pointer]
    while pointer in refs and len(path) < 8:
        pointer = refs[pointer].rstrip("/") or "#"
        path.append(pointer)
        if pointer in path[:-1]:
            break
    return path


def validation_errors(schema: dict[str, Any], value: Any) -> list[str]:
    """The first few ways ``value`` violates ``schema``, each with its JSON path; empty when it validates."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    return [f"at {e.json_path}: {e.message}" for e in errors[:MAX_ERRORS]]


def leading_strings(text: str) -> list[str]:
    """The complete strings at the start of the first JSON array in ``text``: what survives of an answer cut off
    by ``max_new_tokens`` in the middle of a list (``{"tasks": ["a", "b", "c`` gives a and b)."""
    start = text.find("[")
    if start == -1:
        return []
    decoder, found, at = json.JSONDecoder(), [], start + 1
    while True:
        while at < len(text) and text[at] in " \t\r\n,":
            at += 1
        try:
            value, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            return found
        if not isinstance(value, str):
            return found
        found.append(value)


def parse_json(text: str) -> tuple[Any, str | None]:
    """The JSON value in an answer: the whole text, or (from a teacher not held to a grammar) the first object or
    array in it, e.g. inside a ```json fence; (None, why) when there is none."""
    text = text.strip()
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        first_error = exc
    decoder = json.JSONDecoder()
    starts = [i for i, char in enumerate(text) if char in "{["][:MAX_STARTS]
    for start in starts:
        try:
            return decoder.raw_decode(text, start)[0], None
        except json.JSONDecodeError:
            continue
    return None, f"answer is not JSON ({first_error.msg} at line {first_error.lineno} column {first_error.colno})"
