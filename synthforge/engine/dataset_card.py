"""A Hugging Face dataset card (README.md with YAML header) for a run directory."""

from __future__ import annotations

from typing import Any

import yaml

from synthforge.engine.statistics import format_drop_reasons, percent


def _header(manifest: dict[str, Any]) -> str:
    configs = []
    files = manifest["counts"]
    if "sft" in files:
        configs.append({"config_name": "sft", "data_files": [{"split": "train", "path": "sft.jsonl"}], "default": True})
    if "dpo" in files:
        configs.append({"config_name": "dpo", "data_files": [{"split": "train", "path": "dpo.jsonl"}]})
    header = {
        "license": manifest["export"]["license"],
        "tags": ["synthetic", "constitutional-ai", "synthforge"],
        "configs": configs,
    }
    return yaml.safe_dump(header, sort_keys=False).strip()


def render_card(manifest: dict[str, Any]) -> str:
    """Markdown card describing teacher, constitution(s), stages, counts and the funnel."""
    teacher = manifest["teacher"] or {"name": "none (no stage used a teacher)"}
    lines = [
        "---",
        _header(manifest),
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
        f"- Seed: {manifest['seed']}; pipeline file `{manifest['pipeline']['path']}`"
        f" (sha256 {manifest['pipeline']['sha256'][:12]})",
        "- Stages:",
    ]
    for stage in manifest["stages"]:
        constitution = f", constitution {stage['constitution']}" if stage.get("constitution") else ""
        lines.append(f"  - `{stage['name']}` ({stage['kind']}{constitution}), fingerprint {stage['fingerprint'][:12]}")
    lines += ["", "## Funnel", "", "| step | records |", "| --- | --- |"]
    lines += [f"| {step['step']} | {step['records']} |" for step in manifest["funnel"]]
    drops = [
        f"- `{stage['name']}`: " + format_drop_reasons(stage["report"]["drop_reasons"])
        for stage in manifest["stages"]
        if stage["report"].get("drop_reasons")
    ]
    if drops:
        lines += ["", "Dropped records by stage and reason (each one is in `dropped.jsonl`):", "", *drops]
    lines += _principle_table(manifest.get("principles") or {})
    lines += [
        "",
        "## Files",
        "",
        "- `sft.jsonl`: `{messages: [user, assistant]}` (TRL conversational language modeling)",
        "- `dpo.jsonl`: `{prompt: [user], chosen: [assistant], rejected: [assistant]}` (TRL conversational preference)",
        "- `trace.jsonl`: every record with each step (principle, critique, revisions, finish reasons, tokens)",
        "- `dropped.jsonl`: every removed record with the stage and reason",
        "- `manifest.json`: teacher, sampling settings, seed, file hashes, package versions, counts",
        "",
        'Load with `datasets.load_dataset("<this folder>", "sft")` or `"dpo"`.',
        "",
    ]
    return "\n".join(lines)


def _principle_table(stats: dict[str, dict[str, Any]]) -> list[str]:
    """Per-principle rates (critique asked for change, revision changed, edit size, judge swap agreement)."""
    if not stats:
        return []
    lines = [
        "",
        "## Principles",
        "",
        "| principle | critiques | asked for change | revisions | changed | mean edit | judged | swap agreement |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in stats.items():
        cells = [
            s["critiques"],
            percent(s["critique_change_rate"]),
            s["revisions"],
            percent(s["revision_change_rate"]),
            percent(s["mean_edit_fraction"]),
            s["judged_swapped"],
            percent(s["swap_agreement"]),
        ]
        lines.append(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")
    return lines
