"""What a run report shows, computed from the run directory's files (manifest, trace, drop ledger).

Charts are drawn from these aggregates; the record browser gets one compact row per record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthforge.annotations import PREFERENCE, Preference
from synthforge.errors import UserError
from synthforge.files import read_text
from synthforge.records import answer_key, reason_kind
from synthforge.rows import iter_json_values
from synthforge.trace import CRITIQUE_STEP, RESPONSE_STEP, REVISION_STEP, SAMPLE_STEP, StepKind
from synthforge.validation import check_json

EXAMPLES_PER_REASON = 3


_COUNT = {"type": "number"}
_RECORD = {
    "type": "object",
    "required": ["id", "prompt"],
    "properties": {
        "id": {"type": "string"},
        "prompt": {"type": "string"},
        "response": {"type": ["string", "null"]},
        "rejected": {"type": ["string", "null"]},
        "steps": {"type": "array", "items": {"type": "object"}},
        "meta": {"type": "object"},
        "history": {"type": "array", "items": {"type": "object"}},
        "fields": {"type": "object"},
        "reasoning": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_DROP = {
    "type": "object",
    "required": ["stage", "reason", "record"],
    "properties": {"stage": {"type": "string"}, "reason": {"type": "string"}, "record": _RECORD},
}
# What the report reads of a manifest (everything else in it is optional here).
MANIFEST_SCHEMA = {
    "type": "object",
    "required": ["pipeline"],
    "properties": {
        "pipeline": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        "teacher": {"type": ["object", "null"]},
        "usage": {"type": "object"},
        "seconds": _COUNT,
        "stages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "kind", "report"],
                "properties": {
                    "report": {
                        "type": "object",
                        "required": ["inputs", "kept", "dropped", "reused", "seconds"],
                        "properties": {k: _COUNT for k in ("inputs", "kept", "dropped", "reused", "seconds")},
                    }
                },
            },
        },
        "funnel": {
            "type": "array",
            "items": {"type": "object", "required": ["step", "records"], "properties": {"records": _COUNT}},
        },
        "groups": {"type": "object", "additionalProperties": {"type": "object", "required": ["members"]}},
    },
}


def load_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(manifest, kept records, drops) of a finished run directory; files of another shape are one line."""
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"{run_dir}: not a finished run directory (no manifest.json)")
    manifest = read_json(manifest_path, "manifest")
    check_json(manifest, MANIFEST_SCHEMA, str(manifest_path))
    kept = _rows(run_dir / "trace.jsonl", _RECORD)
    dropped = _rows(run_dir / "dropped.jsonl", _DROP)
    return manifest, kept, dropped


def read_json(path: Path, what: str) -> Any:
    """A JSON file's value; a file that isn't JSON (or was cut short) names the file and line."""
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: {what} is not valid JSON ({exc.msg})") from None


def _rows(path: Path, schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a run's JSONL file, each checked against ``schema``; a missing file has none."""
    if not path.is_file():
        return []
    found = []
    for number, row in iter_json_values(path):
        check_json(row, schema, f"{path}:{number}")
        found.append(row)
    return found


def _words(text: str | None) -> int:
    return len((text or "").split())


def first_answer(record: dict[str, Any]) -> str | None:
    """The first answer the teacher wrote (before any revision)."""
    for step in record.get("steps", []):
        if (RESPONSE_STEP.is_(step) or SAMPLE_STEP.is_(step)) and "text" in step:
            return step["text"]
    return record.get("rejected")


def _last(record: dict[str, Any], kind: StepKind, key: str) -> Any:
    step = kind.last(record.get("steps", []))
    return None if step is None else step.get(key)


def lengths(kept: list[dict[str, Any]], dropped: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Word counts of prompts (all records), first answers and final revisions (records that have them)."""
    everything = kept + [d["record"] for d in dropped]
    revised = [r for r in everything if REVISION_STEP.in_(r.get("steps", []))]
    turns = [1 + sum(1 for m in r.get("history") or [] if m.get("role") == "user") for r in everything]
    return {
        **({"user turns": turns} if any(t > 1 for t in turns) else {}),
        "prompt": [_words(r["prompt"]) for r in everything],
        "first answer": [_words(first_answer(r)) for r in everything if first_answer(r) is not None],
        "revision": [_words(r.get("response")) for r in revised],
    }


def confidences(kept: list[dict[str, Any]], dropped: list[dict[str, Any]]) -> list[float]:
    """The judge's confidence of every record it labelled or verified."""
    found = []
    for record in kept + [d["record"] for d in dropped]:
        data = (record.get("meta") or {}).get(PREFERENCE.key)
        if data and "confidence" in data:
            found.append(Preference.from_dict(data).confidence)
    return found


def drop_groups(dropped: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drops by stage and reason kind, most frequent first, with a few example records each."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for drop in dropped:
        groups.setdefault((drop["stage"], reason_kind(drop["reason"])), []).append(drop)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return [
        {
            "stage": stage,
            "reason": kind,
            "count": len(members),
            "examples": [
                {"id": d["record"]["id"], "prompt": d["record"]["prompt"], "reason": d["reason"]}
                for d in members[:EXAMPLES_PER_REASON]
            ],
        }
        for (stage, kind), members in ordered
    ]


def browser_rows(kept: list[dict[str, Any]], dropped: list[dict[str, Any]]) -> list[list[Any]]:
    """One compact row per record: [id, last user turn, first answer, final answer, critique, principle, status,
    earlier turns as [role, text] pairs, the thinking behind the final answer (a reasoning teacher's)]."""
    rows = []
    statuses = [(r, "kept") for r in kept] + [(d["record"], f"dropped by {d['stage']}: {d['reason']}") for d in dropped]
    for record, status in statuses:
        rows.append(
            [
                record["id"],
                record["prompt"],
                first_answer(record) or "",
                record.get("response") or "",
                _last(record, CRITIQUE_STEP, "text") or "",
                _last(record, REVISION_STEP, "principle") or _last(record, CRITIQUE_STEP, "principle") or "",
                status,
                [[m.get("role", ""), m.get("content", "")] for m in record.get("history") or []],
                _thinking(record),
            ]
        )
    return rows


def _thinking(record: dict[str, Any]) -> str:
    answer, thoughts = record.get("response"), record.get("reasoning") or {}
    return thoughts.get(answer_key(answer), "") if answer and isinstance(thoughts, dict) else ""


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The run at a glance: pipeline, teacher and backend, constitutions, seed, duration, tokens."""
    teacher = manifest.get("teacher") or {}
    usage = manifest.get("usage") or {}
    seconds = manifest.get("seconds") or 0
    completion = usage.get("completion_tokens", 0)
    constitutions = sorted({s["constitution"] for s in manifest.get("stages", []) if s.get("constitution")})
    return {
        "pipeline": manifest["pipeline"]["name"],
        "description": manifest["pipeline"].get("description", ""),
        "teacher": teacher.get("name") or teacher.get("model") or "—",
        "backend": teacher.get("backend", "—"),
        "constitutions": ", ".join(constitutions) or "—",
        "seed": manifest.get("seed"),
        "seconds": seconds,
        "prompt_tokens": usage.get("prompt_tokens", 0),
        "completion_tokens": completion,
        "tokens_per_second": round(completion / seconds, 1) if seconds else None,
        "version": manifest.get("synthforge_version"),
        "notes": [f"{s['name']}: {n}" for s in manifest.get("stages", []) for n in s.get("notes") or []],
        "cost_usd": (manifest.get("cost") or {}).get("total_usd"),
        "unpriced_tokens": (manifest.get("cost") or {}).get("unpriced_tokens", 0),
    }


def stage_table(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Per stage: in, kept, dropped, reused, seconds, tokens, and what its teacher calls cost (USD) when the
    pipeline priced them (``prices:``)."""
    rows = []
    costs = (manifest.get("cost") or {}).get("by_stage") or {}
    for stage in manifest.get("stages", []):
        report = stage["report"]
        rows.append(
            {
                "name": stage["name"],
                "kind": stage["kind"],
                "inputs": report["inputs"],
                "kept": report["kept"],
                "dropped": report["dropped"],
                "reused": report["reused"],
                "seconds": report["seconds"],
                "tokens": report.get("completion_tokens", 0),
                "usd": (costs.get(stage["name"]) or {}).get("usd"),
            }
        )
    return rows


def funnel(manifest: dict[str, Any]) -> list[tuple[str, int]]:
    return [(step["step"], int(step["records"])) for step in manifest.get("funnel", [])]


def principle_rows(manifest: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]], dict[str, str], list[str]]:
    """(fields, one row per principle, labels, rate fields) of the stages' per-principle statistics."""
    table = (manifest.get("groups") or {}).get("principle")
    if not table:
        return [], [], {}, []
    members = table["members"]
    fields = list(next(iter(members.values())))
    rows = [{"name": name, **values} for name, values in members.items()]
    return fields, rows, table.get("labels", {}), table.get("rates", [])
