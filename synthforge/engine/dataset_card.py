"""A Hugging Face dataset card (README.md with YAML header) for a run directory."""

from __future__ import annotations

from typing import Any

import yaml

from synthforge.engine.statistics import format_drop_reasons, percent


def data_files_of(manifest: dict[str, Any]) -> dict[str, str]:
    """Each config of a run directory and its file there: sft, dpo, table (those the run wrote)."""
    files = manifest["counts"]
    found = {name: f"{name}.jsonl" for name in ("sft", "dpo") if name in files}
    table = manifest["export"].get("table")
    if "table" in files and table:
        found["table"] = f"table.{table['format']}"
    return found


def _header(manifest: dict[str, Any], data_files: dict[str, str]) -> str:
    configs = [
        {
            "config_name": name,
            "data_files": [{"split": "train", "path": path}],
            **({"default": True} if name == "sft" or (name == "table" and k == 0) else {}),
        }
        for k, (name, path) in enumerate(data_files.items())
    ]
    header = {
        "license": manifest["export"]["license"],
        "tags": ["synthetic", *dict.fromkeys(t for s in manifest["stages"] for t in s.get("tags", ())), "synthforge"],
        "configs": configs,
    }
    return yaml.safe_dump(header, sort_keys=False).strip()


def _cost_lines(cost: dict[str, Any] | None) -> list[str]:
    if not cost:
        return []
    stages = ", ".join(f"{name} ${entry['usd']:.4f}" for name, entry in cost["by_stage"].items())
    unpriced = f"; {cost['unpriced_tokens']} tokens of models without a price" if cost["unpriced_tokens"] else ""
    return [f"- Cost of the teacher calls: ${cost['total_usd']:.4f} ({stages}){unpriced}"]


def render_card(
    manifest: dict[str, Any], data_files: dict[str, str] | None = None, pushed_from: dict[str, Any] | None = None
) -> str:
    """Markdown card describing teacher, constitution(s), stages, counts and the funnel. ``data_files``: each
    config's file (default: the run directory's); ``pushed_from``: the run a published copy came from."""
    teacher = manifest["teacher"] or {"name": "none (no stage used a teacher)"}
    lines = [
        "---",
        _header(manifest, data_files_of(manifest) if data_files is None else data_files),
        "---",
        "",
        f"# {manifest['pipeline']['name']}",
        "",
        manifest["pipeline"].get("description") or "Synthetic post-training data made with synthforge.",
        "",
        "## How it was made",
        "",
        f"- Teacher: {teacher.get('name')} (backend {teacher.get('backend')}, weights {teacher.get('weights')},"
        f" {teacher.get('dtype')})",
        *[
            f"- Teacher `{name}`: {t['identity'].get('name') or t['identity'].get('model')} (backend "
            f"{t['identity'].get('backend')})"
            for name, t in (manifest.get("teachers") or {}).items()
        ],
        *_cost_lines(manifest.get("cost")),
        f"- Seed: {manifest['seed']}; pipeline file `{manifest['pipeline']['path']}`"
        f" (sha256 {manifest['pipeline']['sha256'][:12]})",
        *(
            [
                f"- Published by `synthforge push` from the run of `{pushed_from['pipeline']}` made with synthforge "
                f"{pushed_from['made_with']}; its manifest, resolved pipeline and judge and cost summaries are in "
                "`synthforge/`"
            ]
            if pushed_from
            else []
        ),
        "- Stages:",
    ]
    for stage in manifest["stages"]:
        constitution = f", constitution {stage['constitution']}" if stage.get("constitution") else ""
        lines.append(f"  - `{stage['name']}` ({stage['kind']}{constitution}), fingerprint {stage['fingerprint'][:12]}")
    lines += ["", "## Funnel", "", "| step | records |", "| --- | --- |"]
    lines += [f"| {step['step']} | {step['records']} |" for step in manifest["funnel"]]
    turns = manifest["counts"].get("turns")
    if turns:
        lines += [
            "",
            "Conversations by number of user turns (kept records):",
            "",
            "| turns | records |",
            "| --- | --- |",
        ]
        lines += [f"| {k} | {v} |" for k, v in turns.items()]
    drops = [
        f"- `{stage['name']}`: " + format_drop_reasons(stage["report"]["drop_reasons"])
        for stage in manifest["stages"]
        if stage["report"].get("drop_reasons")
    ]
    if drops:
        lines += ["", "Dropped records by stage and reason (each one is in `dropped.jsonl`):", "", *drops]
    notes = [f"- `{stage['name']}`: {note}" for stage in manifest["stages"] for note in stage.get("notes") or []]
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += _group_tables(manifest.get("groups") or {})
    lines += [
        "",
        "## Files",
        "",
        "- `sft.jsonl`: `{messages: [system?, user, assistant, …, user, assistant]}` — the whole conversation, the "
        "final answer last (TRL conversational language modeling)",
        "- `dpo.jsonl`: `{prompt: [every turn before the final answer], chosen: [assistant], rejected: [assistant]}` "
        "(TRL conversational preference)",
        "- `trace.jsonl`: every record with each step (principle, critique, revisions, finish reasons, tokens)",
        "- `dropped.jsonl`: every removed record with the stage and reason",
        "- `manifest.json`: teacher, sampling settings, seed, file hashes, package versions, counts",
        "",
        'Load with `datasets.load_dataset("<this folder>", "sft")` or `"dpo"`.',
        "",
    ]
    return "\n".join(lines)


def _group_tables(groups: dict[str, dict[str, Any]]) -> list[str]:
    """One table per group the stages reported (e.g. per principle: asked for change, changed, swap agreement)."""
    lines: list[str] = []
    for group, table in groups.items():
        fields = list(next(iter(table["members"].values())))
        header = [table["labels"].get(f, f.replace("_", " ")) for f in fields]
        lines += ["", f"## {group.capitalize()}s", "", f"| {group} | " + " | ".join(header) + " |"]
        lines.append("| --- |" + " --- |" * len(fields))
        for member, values in table["members"].items():
            cells = [percent(values[f]) if f in table["rates"] else str(values[f]) for f in fields]
            lines.append(f"| {member} | " + " | ".join(cells) + " |")
    return lines
