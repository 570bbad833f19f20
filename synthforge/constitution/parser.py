"""Parser for the constitution text format (see ``constitutions/README.md``).

    # a comment
    [principle-name]
    critique: How could the response be harmful?
      An indented line continues the value above (folded into one line;
      a blank line before it starts a new paragraph).
    revision: Rewrite the response to remove the harm.
    compare: Which response is less harmful?      (optional)
    rate: How harmless is the response? ...        (optional: a rubric aspect, scored 1..N by `rate`)
    weight: 2                                      (optional, default 1)
    tags: harm, safety                             (optional)

    [example: name]                                (optional few-shot exchange)
    user_1: / assistant_1: / user_2: / …           (optional: earlier turns of the conversation)
    prompt: / response: / critique_request: / critique: / revision_request: / revision:
    response: |
      A value written as '|' keeps the line breaks of the indented lines below it.

Every error names the file and line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from synthforge.builtin import builtin_path
from synthforge.constitution.model import Constitution, FewShotExample, Principle
from synthforge.errors import UserError, excerpt
from synthforge.files import read_text
from synthforge.hashing import stable_hash

PRINCIPLE_KEYS = {"critique", "revision", "compare", "rate", "weight", "tags"}
PRINCIPLE_REQUIRED = ("critique", "revision")
EXAMPLE_KEYS = ("prompt", "response", "critique_request", "critique", "revision_request", "revision")
SUFFIXES = (".txt", ".md")


class ConstitutionError(UserError):
    """A malformed constitution; ``problems`` lists every ``file:line: message``; str() shows the first."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        more = len(self.problems) - 1
        suffix = f" (+{more} more; see `synthforge constitution check`)" if more else ""
        super().__init__(self.problems[0] + suffix)


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
        raise _fail(source, lineno, f"block name {excerpt(name)} must not contain spaces (use dashes)")
    return _Block(name=name, is_example=is_example, line=lineno)


class _Reader:
    """Line-by-line reader of the block format; collects every problem instead of stopping at the first."""

    def __init__(self, source: str):
        self.source = source
        self.blocks: list[_Block] = []
        self.problems: list[str] = []
        self.current: _Block | None = None
        self.key: str | None = None
        self.literal_indent: int | None = None  # a '|' value: None = folded, -1 = before its first line
        self.pending_blank = 0

    def read(self, text: str) -> list[_Block]:
        for lineno, raw in enumerate(text.splitlines(), start=1):
            try:
                self._line(raw.rstrip(), lineno)
            except ConstitutionError as exc:
                self.problems.extend(exc.problems)
        return self.blocks

    def _line(self, line: str, lineno: int) -> None:
        if not line.strip():
            self.pending_blank += 1
            return
        blanks, self.pending_blank = self.pending_blank, 0
        if line.startswith("#"):
            return
        if line[0].isspace():
            self._continuation(line, lineno, blanks)
        elif line.startswith("["):
            if not line.endswith("]"):
                raise _fail(self.source, lineno, "block header must end with ']'")
            self.current, self.key, self.literal_indent = _parse_header(line, self.source, lineno), None, None
            self.blocks.append(self.current)
        else:
            self._key_value(line, lineno)

    def _continuation(self, line: str, lineno: int, blanks: int) -> None:
        if self.current is None or self.key is None:
            raise _fail(self.source, lineno, "indented line continues nothing (put it after a 'key: value' line)")
        values, indent = self.current.values, len(line) - len(line.lstrip())
        if self.literal_indent is None:
            values[self.key] += ("\n\n" if blanks else " ") + line.strip()
        elif self.literal_indent == -1:
            self.literal_indent, values[self.key] = indent, line.strip()
        else:
            values[self.key] += "\n" * (1 + blanks) + line[min(indent, self.literal_indent) :]

    def _key_value(self, line: str, lineno: int) -> None:
        self.key = None
        if self.current is None:  # nothing parsed yet: maybe not a constitution at all, so nothing is quoted
            raise _fail(self.source, lineno, "not a constitution: text before the first [principle] header")
        if ":" not in line:
            raise _fail(self.source, lineno, f"expected 'key: value' or '[name]', got {excerpt(line)}")
        key, value = (part.strip() for part in line.split(":", 1))
        key = key.lower()
        allowed = EXAMPLE_KEYS if self.current.is_example else PRINCIPLE_KEYS
        if key not in allowed and not (self.current.is_example and _round_key(key)):
            raise _fail(
                self.source, lineno, f"unknown key {excerpt(key)} (expected one of: {', '.join(sorted(allowed))})"
            )
        if key in self.current.values:
            raise _fail(self.source, lineno, f"key {excerpt(key)} given twice in block [{self.current.name}]")
        self.literal_indent = -1 if value == "|" else None
        self.current.values[key] = "" if value == "|" else value
        self.current.lines[key], self.key = lineno, key


def _principle(block: _Block, source: str) -> Principle:
    has = {key: bool(block.values.get(key, "").strip()) for key in (*PRINCIPLE_REQUIRED, "compare", "rate")}
    judge_only = (has["compare"] or has["rate"]) and not has["critique"] and not has["revision"]
    for key in PRINCIPLE_REQUIRED:
        if not has[key] and not judge_only:
            raise _fail(source, block.line, f"principle [{block.name}] has no {key} request ('{key}: ...')")
    weight = 1.0
    if "weight" in block.values:
        try:
            weight = float(block.values["weight"])
        except ValueError:
            raise _fail(source, block.lines["weight"], "weight must be a number") from None
        if not math.isfinite(weight) or weight <= 0:
            raise _fail(source, block.lines["weight"], "weight must be positive and finite")
    tags = tuple(t.strip() for t in block.values.get("tags", "").split(",") if t.strip())
    return Principle(
        name=block.name,
        critique=block.values.get("critique", ""),
        revision=block.values.get("revision", ""),
        compare=block.values.get("compare") or None,
        rate=block.values.get("rate") or None,
        weight=weight,
        tags=tags,
        line=block.line,
    )


ROUND_KEYS = ("critique_request", "critique", "revision_request", "revision")


HISTORY_KEYS = ("user", "assistant")


def _round_key(key: str) -> tuple[str, int] | None:
    """``critique_2`` → ("critique", 2): a key of a further critique/revision round of an example; ``user_1`` →
    ("user", 1): a turn of the conversation before its ``prompt``."""
    base, _, number = key.rpartition("_")
    if base in HISTORY_KEYS and number.isdigit() and int(number) >= 1:
        return base, int(number)
    return (base, int(number)) if base in ROUND_KEYS and number.isdigit() and int(number) >= 2 else None


def _example(block: _Block, source: str) -> FewShotExample:
    missing = [k for k in EXAMPLE_KEYS if not block.values.get(k, "").strip()]
    extra = [found for k in block.values if (found := _round_key(k))]
    last = max((n for base, n in extra if base in ROUND_KEYS), default=1)
    earlier = max((n for base, n in extra if base in HISTORY_KEYS), default=0)
    missing += [f"{k}_{n}" for n in range(1, earlier + 1) for k in HISTORY_KEYS if not block.values.get(f"{k}_{n}")]
    missing += [f"{k}_{n}" for n in range(2, last + 1) for k in ROUND_KEYS if not block.values.get(f"{k}_{n}")]
    if missing:
        raise _fail(source, block.line, f"example [{block.name}] is missing: {', '.join(missing)}")
    more = tuple(tuple(block.values[f"{k}_{n}"] for k in ROUND_KEYS) for n in range(2, last + 1))
    history = tuple((block.values[f"user_{n}"], block.values[f"assistant_{n}"]) for n in range(1, earlier + 1))
    fields = {k: block.values[k] for k in EXAMPLE_KEYS}
    return FewShotExample(name=block.name, line=block.line, more_rounds=more, history=history, **fields)  # type: ignore[arg-type]


def parse_constitution(text: str, source: str = "<string>", name: str = "constitution") -> Constitution:
    """Parse constitution text; ``source`` is the file name used in error messages (all problems collected)."""
    reader = _Reader(source)
    principles: list[Principle] = []
    examples: list[FewShotExample] = []
    seen: dict[str, int] = {}
    for block in reader.read(text):
        try:
            if block.name in seen:
                raise _fail(source, block.line, f"block [{block.name}] already defined at line {seen[block.name]}")
            seen[block.name] = block.line
            if block.is_example:
                examples.append(_example(block, source))
            else:
                principles.append(_principle(block, source))
        except ConstitutionError as exc:
            reader.problems.extend(exc.problems)
    if not principles and not reader.problems:
        reader.problems.append(f"{source}:1: no principles found (a principle starts with a [name] line)")
    if reader.problems:
        reader.problems.sort(key=_line_of)
        raise ConstitutionError(reader.problems)
    return Constitution(
        name=name,
        principles=tuple(principles),
        examples=tuple(examples),
        path=Path(source) if source != "<string>" else None,
        sha256=stable_hash(text),
    )


def _line_of(problem: str) -> int:
    parts = problem.split(":")
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0


def resolve_constitution_path(ref: str, constitutions_dir: Path) -> Path:
    """A path as given, or a name (with a .txt or .md suffix) in ``constitutions_dir``, else among the built-in
    constitutions."""
    candidates = [Path(ref)]
    for folder in (constitutions_dir, builtin_path("constitutions")):
        candidates += [folder / f"{ref}{suffix}" for suffix in ("", *SUFFIXES)]
    for path in candidates:
        if path.is_file():
            return path
    raise UserError(
        f"constitution {ref!r} not found (looked in {constitutions_dir} for {ref}.txt / {ref}.md, and among the "
        "built-in constitutions)"
    )


def load_constitution(ref: str | Path, constitutions_dir: Path = Path("constitutions")) -> Constitution:
    """Load and parse a constitution by file path or by name."""
    path = resolve_constitution_path(str(ref), constitutions_dir)
    text = read_text(path, "constitution")
    return parse_constitution(text, source=str(path), name=path.stem)
