"""The one reader of rows users give us: JSONL (streamed), parquet (in record batches), plain text (a row per
line), a saved ``datasets`` directory — and the one place that knows the layouts rows come in.

Layouts, in the order they are recognised:

- TRL conversational: ``messages`` (system, user, assistant turns)
- TRL prompt–completion / preference: ``prompt`` (text or messages) with ``completion``, ``chosen``/``rejected``
  or ``response`` (text or messages)
- ShareGPT: ``conversations`` of ``{"from": "system"|"human"|"gpt", "value": ...}``
- HH-RLHF: ``chosen`` / ``rejected`` transcripts ``"\\n\\nHuman: … \\n\\nAssistant: …"`` (several turns)
- Alpaca / Self-Instruct: ``instruction`` (+ ``input``) and ``output``
- ``text``: a prompt alone

Each becomes a :class:`Dialogue`: the turns before the answer (``prompt``, system message first), and the answer
(``chosen``) and its alternative (``rejected``) when the row has them. Every error names the file and the line
(JSONL, text) or row (parquet).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthforge.errors import UserError, excerpt
from synthforge.files import BOM, read_text

DATA_SUFFIXES = (".jsonl", ".parquet")
ROLES = ("system", "user", "assistant")
_READ = 1 << 20
_SPEAKER = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}

Message = dict[str, str]
Place = tuple[str, int, int]  # (file, line number, row number): where a row is, named in errors
Row = tuple[int, dict[str, Any], str | None]  # (line or row number, the row, its JSONL line as read or None)


def where(path: str, number: int, row: int) -> str:
    """How errors name a row: ``file:line: row N``."""
    return f"{path}:{number}: row {row}"


# -- files ------------------------------------------------------------------------------------------------
def data_files(source: Path) -> list[Path]:
    """The input files of ``source``: the file itself, or every .jsonl / .parquet file under a directory
    (sorted by relative path; that order is the row order of the whole input; hidden files are skipped)."""
    if source.is_file():
        if source.suffix not in DATA_SUFFIXES:
            raise UserError(f"{source}: expected a .jsonl or .parquet file")
        return [source]
    if not source.is_dir():
        raise UserError(f"{source}: no such file or directory")
    found = sorted(
        (p for p in source.rglob("*") if p.suffix in DATA_SUFFIXES and p.is_file() and not _hidden(p, source)),
        key=lambda p: p.relative_to(source).as_posix(),
    )
    if not found:
        raise UserError(f"{source}: the directory holds no .jsonl or .parquet files")
    return found


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def _lines(read: Callable[[int], bytes]) -> Iterator[bytes]:
    """Lines of a byte stream split at b"\\n" only (JSON strings may hold U+2028 and friends raw, which
    ``str.splitlines`` would break a row at)."""
    rest = b""
    while chunk := read(_READ):
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def jsonl_lines(read: Callable[[int], bytes], path: str, what: str = "JSONL file") -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank line of a JSONL byte stream (without its line ending)."""
    for number, raw in enumerate(_lines(read), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{path}:{number}: {what} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start})"
            ) from None
        if number == 1:
            text = text.removeprefix(BOM)  # a byte-order mark some editors write first: not part of the row
        if text.strip():
            yield number, text.removesuffix("\r")


def iter_json_values(path: Path, what: str = "JSONL file") -> Iterator[tuple[int, Any]]:
    """(line number, JSON value) of every non-blank line of a JSONL file; a bad line names file and line."""
    try:
        with open(path, "rb") as handle:
            for number, text in jsonl_lines(handle.read, str(path), what):
                yield number, _json(text, str(path), number)
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: {what} is a directory, expected a file") from None


def _json(text: str, path: str, number: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
    except ValueError:  # Python refuses integers of more than 4,300 digits
        raise UserError(f"{path}:{number}: a number on this line is too long to read") from None


def parse_row(text: str, path: str, number: int) -> dict[str, Any]:
    """The JSON object on line ``number``; anything else names the file and line."""
    row = _json(text, path, number)
    if not isinstance(row, dict):
        raise UserError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    return row


def read_jsonl(path: Path, what: str = "JSONL file") -> list[dict[str, Any]]:
    """JSON objects, one per non-blank line; a bad line is named by file and line number."""
    rows = []
    for number, row in iter_json_values(path, what):
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def iter_parquet(source: Any, path: str) -> Iterator[Row]:
    """(row number, row, None) of a parquet file (a path or a random-access file), read in record batches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(source).iter_batches(batch_size=4096)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            number += 1
            yield number, row, None


def iter_rows(source: Any, path: str) -> Iterator[Row]:
    """(line or row number, row, the JSONL line as read or None) of one file, streamed: JSONL, parquet, or
    plain text (each non-blank line not starting with ``#`` is a ``{"text": line}`` row); ``source`` is the
    path or an open binary file."""
    try:
        if path.endswith(".parquet"):
            yield from iter_parquet(source, path)
        elif not path.endswith((".jsonl", ".json")) and isinstance(source, str | Path):
            for number, line in enumerate(read_text(Path(source), "text file").splitlines(), 1):
                if line.strip() and not line.lstrip().startswith("#"):
                    yield number, {"text": line.strip()}, None
        elif isinstance(source, str | Path):
            with open(source, "rb") as handle:
                for number, text in jsonl_lines(handle.read, path):
                    yield number, parse_row(text, path, number), text
        else:
            for number, text in jsonl_lines(source.read, path):
                yield number, parse_row(text, path, number), text
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None


def iter_lines(source: Any, path: str) -> Iterator[str]:
    """The output line of each row of one input file, in order: a JSONL line as read (not parsed again), a
    parquet row as JSON."""
    if path.endswith(".parquet"):
        for number, row, _ in iter_parquet(source, path):
            yield json_line(row, (path, number, number))
    else:
        for _, text in jsonl_lines(source.read, path):
            yield text + "\n"


def json_line(row: dict[str, Any], at: Place) -> str:
    """The row as one JSON line (as ``write_jsonl`` writes it); a value JSON cannot hold names the row."""
    try:
        return json.dumps(row, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where(*at)}: a value cannot be written as JSON ({exc})") from None


def is_saved_dataset(path: Path) -> bool:
    """A directory written by ``datasets``' ``save_to_disk``."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(number, row) of every row of a file (JSONL, parquet, text) or of a saved ``datasets`` directory
    (its ``train`` split)."""
    if path.is_dir() and is_saved_dataset(path):
        import datasets

        loaded = datasets.load_from_disk(str(path))
        table = loaded["train"] if isinstance(loaded, datasets.DatasetDict) else loaded
        return list(enumerate(table.to_list(), 1))
    return [(number, row) for number, row, _ in iter_rows(path, str(path))]


# -- message content ----------------------------------------------------------------------------------
def content_text(content: Any) -> str:
    """A message's content as text: a string, or OpenAI's / TRL's list of text parts (``{"type": "text", "text":
    ...}``) joined; anything else raises ValueError saying what it is (other part types, non-text values). The
    one reading of content for seeds, training data and ``serve``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                shown = f"of type {excerpt(kind)}" if isinstance(kind, str) else f"{index + 1} is not a text part"
                raise ValueError(f"content part {shown} is not supported (only text parts)")
            if not isinstance(part.get("text"), str):
                raise ValueError(f"content part {index + 1}: its 'text' is not text")
            texts.append(part["text"])
        return "".join(texts)
    raise ValueError(f"content is not text (got {_json_type(content)})")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def unicode_problem(text: str) -> str | None:
    """Why ``text`` can't be given to a tokenizer or written as UTF-8 (a lone surrogate, which JSON's ``\\uD800``
    escapes can make), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds a lone surrogate (\\u{ord(text[exc.start]):04x}), which is not Unicode text"
    return None


# -- layouts ----------------------------------------------------------------------------------------------
@dataclass
class Dialogue:
    """A row's conversation: the turns before the answer (system first), the answer and its alternative."""

    prompt: list[Message]
    chosen: list[Message] | None = None
    rejected: list[Message] | None = None

    def user_turns(self) -> list[str]:
        """The text of every user turn."""
        return [
            t for m in self.prompt if m.get("role") == "user" and (t := _text_or_none(m.get("content"))) is not None
        ]

    def user_text(self) -> str | None:
        """Every user turn, joined by newlines (None when there is none)."""
        texts = self.user_turns()
        return "\n".join(texts) if texts else None

    def answer(self) -> str | None:
        """The text of the final answer (None when the row has none)."""
        return _text_or_none(self.chosen[-1].get("content")) if self.chosen else None


def _text_or_none(content: Any) -> str | None:
    try:
        return content_text(content)
    except ValueError:
        return None


def is_transcript(text: str) -> bool:
    """Whether ``text`` is an HH-RLHF transcript: it starts with a speaker (``Human:``, ``\\n\\nHuman:``, any line
    endings)."""
    return bool(_SPEAKER.match(text.replace("\r\n", "\n")))


def transcript(text: str, answer_slot: bool = False) -> list[Message]:
    """An HH-RLHF transcript (``"\\n\\nHuman: … \\n\\nAssistant: …"``, CRLF line endings too) as messages; text
    without speakers is one user turn. A prompt's closing ``Assistant:`` with nothing after it is the slot the
    model fills, not a turn: it ends the prompt (``answer_slot``: a chosen/rejected transcript's, where that
    slot is the answer, even when empty)."""
    parts = _SPEAKER.split(text.replace("\r\n", "\n"))
    if len(parts) == 1:
        return [{"role": "user", "content": text.strip()}]
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    if not answer_slot and len(messages) > 1 and messages[-1] == {"role": "assistant", "content": ""}:
        messages.pop()
    return messages


def messages_of(value: Any, role: str = "user") -> list[Message] | None:
    """A cell as messages: a message list as given (roles and text checked by :func:`dialogue`), or a string
    as one turn of ``role``; None for anything else."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return [dict(m) for m in value]
    return None


def dialogue(row: dict[str, Any], field: str | None = None) -> Dialogue | None:
    """The :class:`Dialogue` of a row in any supported layout (``field``: the column holding the prompt, when
    it is not one of the layouts' own); None when the row holds none."""
    if field and field not in ("prompt", "messages", "text") and field in row:
        prompt = messages_of(row[field])
        return None if prompt is None else _split(prompt, row)
    if "messages" in row:
        messages = messages_of(row["messages"]) or []
        return _split(messages, row)
    if "prompt" in row:
        prompt = messages_of(row["prompt"])
        if prompt is None:
            return None
        answer = next((row[k] for k in ("chosen", "completion", "response") if row.get(k) is not None), None)
        chosen = messages_of(answer, "assistant") if answer is not None else None
        rejected = messages_of(row["rejected"], "assistant") if row.get("rejected") is not None else None
        return Dialogue(prompt, chosen, rejected)
    if "conversations" in row and isinstance(row["conversations"], list):
        turns = [
            {"role": _SHAREGPT_ROLES.get(str(t.get("from")), str(t.get("from"))), "content": t.get("value")}
            for t in row["conversations"]
            if isinstance(t, dict)
        ]
        return _split(turns, row)
    if isinstance(row.get("chosen"), str):  # HH-RLHF transcripts
        chosen = transcript(row["chosen"], answer_slot=True)
        rejected = transcript(row["rejected"], answer_slot=True) if isinstance(row.get("rejected"), str) else None
        found = _split(chosen, row)
        if rejected and rejected[-1]["role"] == "assistant":
            found.rejected = rejected[-1:]
        return found
    if "instruction" in row:
        prompt = "\n".join(p for p in (row["instruction"], row.get("input")) if isinstance(p, str) and p)
        output = row.get("output")
        return Dialogue(
            messages_of(prompt) or [], messages_of(output, "assistant") if isinstance(output, str) else None
        )
    if "text" in row and isinstance(row["text"], str):
        return Dialogue(messages_of(row["text"]) or [])
    return None


def _split(messages: list[Message], row: dict[str, Any]) -> Dialogue:
    """A message list ending with an assistant turn: that turn is the answer; else all of it is the prompt."""
    if messages and messages[-1].get("role") == "assistant":
        return Dialogue(messages[:-1], messages[-1:])
    return Dialogue(messages)


@dataclass
class SeedRow:
    """A conversation to answer: the turns before the last user turn (system first), that turn, and whether the
    row marks it harmful."""

    history: list[Message]
    prompt: str
    harmful: bool | None = None
    persona: str | None = None  # who the user is, for a simulated user that continues the conversation
    columns: dict[str, Any] = field(default_factory=dict)  # the extra columns a pipeline keeps (seeds.columns)


def check_dialogue(messages: list[Any], at: str, answer: bool = False, reasoning: bool = False) -> list[Message]:
    """``messages`` as a valid conversation (roles system/user/assistant, a system message only first, no empty
    turn, no two turns of one role in a row, a user turn to answer last unless ``answer``); else one line naming
    ``at`` (file:line) and the turn. ``reasoning``: assistant turns keep their ``reasoning_content`` (training
    data; a teacher is never shown an earlier turn's thinking)."""
    checked: list[Message] = []
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict):
            raise UserError(f"{at}: turn {number} is not an object with a role and a content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise UserError(
                f"{at}: turn {number} has an unknown role {excerpt(role)} (expected system, user or assistant)"
            )
        if role == "system" and number != 1:
            raise UserError(f"{at}: turn {number} is a system message; only the first turn may be one")
        try:
            content = content_text(content)
        except ValueError as exc:
            raise UserError(f"{at}: turn {number} ({role}): {exc}") from None
        if not content.strip():
            raise UserError(f"{at}: turn {number} ({role}) is empty")
        if problem := unicode_problem(content):
            raise UserError(f"{at}: turn {number} ({role}) {problem}")
        if checked and checked[-1]["role"] == role:
            raise UserError(f"{at}: turns {number - 1} and {number} are both {role} turns (they must alternate)")
        checked.append({"role": role, "content": content})
        thought = message.get("reasoning_content") if reasoning and role == "assistant" else None
        if isinstance(thought, str) and thought.strip():
            checked[-1]["reasoning_content"] = thought
    turns = [m for m in checked if m["role"] != "system"]
    if not turns:
        raise UserError(f"{at}: the conversation has no user turn")
    if turns[0]["role"] != "user":
        raise UserError(f"{at}: the conversation starts with an assistant turn (the user speaks first)")
    if not answer and checked[-1]["role"] != "user":
        raise UserError(f"{at}: the conversation ends on an assistant turn, where an answer is to be generated")
    return checked


def _seed_messages(row: dict[str, Any], field: str, at: str) -> list[Any] | None:
    """The conversation to answer in a row: the ``field`` column (text, messages, a transcript), or, for
    ``prompt``, any layout's turns before its answer."""
    value = row.get(field)
    if value is not None:
        if isinstance(value, str):
            return transcript(value) if is_transcript(value) else [{"role": "user", "content": value}]
        if isinstance(value, list):
            return value
        raise UserError(f"{at}: {field!r} must be text or a list of messages, got {type(value).__name__}")
    if field != "prompt":
        return None
    found = dialogue(row)
    if found is None:
        return None
    whole = check_dialogue([*found.prompt, *(found.chosen or [])], at, answer=True)  # its old answer too
    return whole[:-1] if whole[-1]["role"] == "assistant" else whole


def read_dialogues(
    path: Path,
    field: str = "prompt",
    harmful_field: str | None = "harmful",
    system: str | None = None,
    columns: Sequence[str] = (),
) -> list[SeedRow]:
    """The conversation to answer in every row of a prompts file: any layout above (JSONL, parquet; a row's
    final assistant turn, if any, is its old answer and left out), or plain text, one prompt per line.
    ``system``: the system message of rows that have none (a row's own, or its ``system`` column, wins). A
    boolean ``harmful`` column (or another named one) marks harmful prompts. A row that isn't a valid
    conversation is one line naming the file and line. ``columns``: other columns every row must have, kept
    beside the conversation (for templates and later stages)."""
    found: list[SeedRow] = []
    for number, row, _ in iter_rows(path, str(path)):
        at = f"{path}:{number}"
        if set(row) == {"text"} and not str(path).endswith((".jsonl", ".json", ".parquet")):
            messages: list[Any] = [{"role": "user", "content": row["text"]}]
        else:
            messages = _seed_messages(row, field, at) or []
            if not messages:
                raise UserError(f"{at}: expected a non-empty {field!r} (text, messages or a transcript)")
        own = row.get("system") if field != "system" else None
        if own is not None and not isinstance(own, str):
            raise UserError(f"{at}: 'system' must be text, got {type(own).__name__}")
        default = own if own is not None else system
        if default and not (isinstance(messages[0], dict) and messages[0].get("role") == "system"):
            messages = [{"role": "system", "content": default}, *messages]
        checked = check_dialogue(messages, at)
        flag = row.get(harmful_field) if harmful_field else None
        if flag is not None and not isinstance(flag, bool):
            raise UserError(f"{at}: {harmful_field!r} must be true or false, got {excerpt(flag)}")
        persona = row.get("persona")
        if persona is not None and not isinstance(persona, str):
            raise UserError(f"{at}: 'persona' must be text, got {type(persona).__name__}")
        missing = [c for c in columns if c not in row]
        if missing:
            raise UserError(f"{at}: no column {missing[0]!r} (seeds.columns lists it)")
        kept = {c: row[c] for c in columns}
        found.append(SeedRow(checked[:-1], checked[-1]["content"].strip(), flag, persona, kept))
    if not found:
        raise UserError(f"{path}: seeds file has no prompts")
    return found
