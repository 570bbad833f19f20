"""Parser for the constitution text format (see ``constitutions/README.md``).

    # a comment
    [principle-name]
    critique: How could the response be harmful?
      An indented line continues the value above (folded into one line;
      a blank line before it starts a new paragraph).
    revision: Rewrite the response to remove the harm.
    compare: Which response is less harmful?      (optional)
    weight: 2                                      (optional, default 1)
    tags: harm, safety                             (optional)

    [example: name]                                (optional few-shot exchange)
    prompt: / response: / critique_request: / critique: / revision_request: / revision:

Every error names the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from synthforge.constitution.model import Constitution, FewShotExample, Principle
from synthforge.errors import UserError
from synthforge.hashing import stable_hash

PRINCIPLE_KEYS = {"critique", "revision", "compare", "weight", "tags"}
PRINCIPLE_REQUIRED = ("critique", "revision")
EXAMPLE_KEYS = ("prompt", "response", "critique_request", "critique", "revision_request", "revision")
SUFFIXES = (".txt", ".md")


class ConstitutionError(UserError):
    """A malformed constitution; the message starts with ``file:line:``."""


@dataclass
class _Block:
    name: str
    is_example: bool
    line: int
    values: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)


def _fail(source: str, line: int, message: str) -> ConstitutionError:
    return ConstitutionError(f"{source}:{line}: {message}")


def _parse_header(text: str, source: str, lineno: int) -> _Block:
    inner = text.strip()[1:-1].strip()
    is_example = inner.lower().startswith("example:")
    name = inner.split(":", 1)[1].strip() if is_example else inner
    if not name:
        raise _fail(source, lineno, "a block header needs a name, e.g. [harmful] or [example: lockpicking]")
    if any(ch.isspace() for ch in name):
        raise _fail(source, lineno, f"block name {name!r} must not contain spaces (use dashes)")
    return _Block(name=name, is_example=is_example, line=lineno)


def _split_blocks(text: str, source: str) -> list[_Block]:
    blocks: list[_Block] = []
    current: _Block | None = None
    key: str | None = None
    pending_blank = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not line.strip():
            pending_blank += 1
            continue
        if line.startswith("#"):
            continue
        if line[0].isspace():
            if current is None or key is None:
                raise _fail(source, lineno, "indented line continues nothing (put it after a 'key: value' line)")
            sep = "\n\n" if pending_blank else " "  # indented lines fold into one paragraph
            current.values[key] += sep + line.strip()
            pending_blank = 0
            continue
        pending_blank = 0
        if line.startswith("["):
            if not line.endswith("]"):
                raise _fail(source, lineno, "block header must end with ']'")
            current, key = _parse_header(line, source, lineno), None
            blocks.append(current)
            continue
        if ":" not in line:
            raise _fail(source, lineno, f"expected 'key: value' or '[name]', got {line[:40]!r}")
        if current is None:
            raise _fail(source, lineno, "a 'key: value' line before the first [principle] header")
        key, value = (part.strip() for part in line.split(":", 1))
        key = key.lower()
        allowed = EXAMPLE_KEYS if current.is_example else PRINCIPLE_KEYS
        if key not in allowed:
            raise _fail(source, lineno, f"unknown key {key!r} (expected one of: {', '.join(sorted(allowed))})")
        if key in current.values:
            raise _fail(source, lineno, f"key {key!r} given twice in block [{current.name}]")
        current.values[key], current.lines[key] = value, lineno
    return blocks


def _principle(block: _Block, source: str) -> Principle:
    for key in PRINCIPLE_REQUIRED:
        if not block.values.get(key, "").strip():
            raise _fail(source, block.line, f"principle [{block.name}] has no {key} request ('{key}: ...')")
    weight = 1.0
    if "weight" in block.values:
        try:
            weight = float(block.values["weight"])
        except ValueError:
            raise _fail(source, block.lines["weight"], "weight must be a number") from None
        if weight <= 0:
            raise _fail(source, block.lines["weight"], "weight must be positive")
    tags = tuple(t.strip() for t in block.values.get("tags", "").split(",") if t.strip())
    return Principle(
        name=block.name,
        critique=block.values["critique"],
        revision=block.values["revision"],
        compare=block.values.get("compare") or None,
        weight=weight,
        tags=tags,
        line=block.line,
    )


def _example(block: _Block, source: str) -> FewShotExample:
    missing = [k for k in EXAMPLE_KEYS if not block.values.get(k, "").strip()]
    if missing:
        raise _fail(source, block.line, f"example [{block.name}] is missing: {', '.join(missing)}")
    return FewShotExample(name=block.name, line=block.line, **{k: block.values[k] for k in EXAMPLE_KEYS})


def parse_constitution(text: str, source: str = "<string>", name: str = "constitution") -> Constitution:
    """Parse constitution text; ``source`` is the file name used in error messages."""
    principles: list[Principle] = []
    examples: list[FewShotExample] = []
    seen: dict[str, int] = {}
    for block in _split_blocks(text, source):
        if block.name in seen:
            raise _fail(source, block.line, f"block [{block.name}] already defined at line {seen[block.name]}")
        seen[block.name] = block.line
        if block.is_example:
            examples.append(_example(block, source))
        else:
            principles.append(_principle(block, source))
    if not principles:
        raise ConstitutionError(f"{source}:1: no principles found (a principle starts with a [name] line)")
    return Constitution(
        name=name,
        principles=tuple(principles),
        examples=tuple(examples),
        path=Path(source) if source != "<string>" else None,
        sha256=stable_hash(text),
    )


def resolve_constitution_path(ref: str, constitutions_dir: Path) -> Path:
    """A path as given, or a name in ``constitutions_dir`` with a .txt or .md suffix."""
    candidates = [Path(ref)] + [constitutions_dir / f"{ref}{suffix}" for suffix in ("", *SUFFIXES)]
    for path in candidates:
        if path.is_file():
            return path
    raise UserError(f"constitution {ref!r} not found (looked in {constitutions_dir} for {ref}.txt / {ref}.md)")


def load_constitution(ref: str | Path, constitutions_dir: Path = Path("constitutions")) -> Constitution:
    """Load and parse a constitution by file path or by name."""
    path = resolve_constitution_path(str(ref), constitutions_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConstitutionError(f"{path}:1: not UTF-8 text ({exc.reason})") from None
    return parse_constitution(text, source=str(path), name=path.stem)
