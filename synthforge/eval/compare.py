"""``synthforge eval compare``: answer held-out prompts with several models and let a judge compare them.

It is a pipeline on the engine (``pipelines/eval-compare.yaml``: one ``answer`` stage per model, then a
``compare_judge`` stage), so it is cached, resumable after a kill, ledgered and reproducible like
``generate``; this module builds its stages and turns the judged records into win rates, bootstrap
intervals, swap agreement, examples, and the safety / over-refusal shares.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthforge.annotations import ANSWERS, COMPARISONS, HARMFUL, REFUSALS
from synthforge.builtin import builtin_path
from synthforge.engine.runner import Log, RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.errors import UserError
from synthforge.files import write_atomic
from synthforge.records import Record
from synthforge.rows import read_jsonl
from synthforge.stages.compare_judge import position_noise
from synthforge.stages.helpers.judging import MAX_FLIP_RATE, swap_agrees
from synthforge.teachers.factory import BACKENDS, teacher_overrides
from synthforge.trace import COMPARISON_STEP

DEFAULT_PIPELINE = builtin_path("pipelines", "eval-compare.yaml")


@dataclass
class CompareOptions:
    """What to compare, on which prompts, judged by whom."""

    models: list[str]
    prompts: Path | None = None
    judge: str | None = None
    constitution: str | None = None
    principles: int | None = None
    out: Path | None = None
    pipeline: Path = DEFAULT_PIPELINE
    limit: int | None = None
    seed: int | None = None
    max_new_tokens: int | None = None
    temperature: float = 0.0
    harmful_field: str | None = None
    bootstrap: int = 1000
    overrides: list[str] = field(default_factory=list)


def labels_for(models: list[str]) -> list[str]:
    """Short unique labels: the model reference's last path component (``embedded``, ``student-dpo``; for
    ``openai:MODEL@URL`` or ``vllm:MODEL``, the model's), in letters, digits, ``.``, ``_`` and ``-``."""
    labels: list[str] = []
    for model in models:
        backend, _, rest = model.partition(":")
        named = rest.split("@", 1)[0] if backend in BACKENDS and rest else model
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(named).name or named).strip("-.") or "model"
        label, n = base, 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.append(label)
    return labels


def compare_overrides(options: CompareOptions) -> list[str]:
    """``--set`` assignments that turn the compare pipeline into this comparison."""
    if len(options.models) < 2:
        raise UserError("--models: give at least two models to compare, e.g. --models embedded,outputs/run/student-dpo")
    sampling: dict[str, Any] = {"temperature": options.temperature}
    if options.max_new_tokens:
        sampling["max_new_tokens"] = options.max_new_tokens
    stages: list[dict[str, Any]] = [
        {"answer": {"name": f"answer-{label}", "model": model, "label": label, "sampling": sampling}}
        for model, label in zip(options.models, labels_for(options.models), strict=True)
    ]
    judge = _pipeline_judge_settings(options.pipeline)
    if options.constitution:
        judge["constitution"] = options.constitution
    if options.principles is not None:
        judge["principles"] = options.principles
    stages.append({"compare_judge": judge})
    sets = [f"stages={json.dumps(stages)}", *options.overrides]
    if options.prompts is not None:
        sets.append(f"seeds.path={json.dumps(str(options.prompts.expanduser().resolve()))}")
    if options.harmful_field:
        sets.append(f"seeds.harmful_field={json.dumps(options.harmful_field)}")
    if options.seed is not None:
        sets.append(f"seed={options.seed}")
    if options.judge:
        sets += teacher_overrides(options.judge)
    return sets


def _pipeline_judge_settings(pipeline: Path) -> dict[str, Any]:
    """The ``compare_judge`` settings the pipeline file gives (kept when the stages are rebuilt per model)."""
    import yaml

    from synthforge.files import read_text

    try:
        data = yaml.safe_load(read_text(pipeline, "pipeline file"))
    except yaml.YAMLError:
        return {}  # load_pipeline reports it with the line
    for entry in (data or {}).get("stages") or []:
        if isinstance(entry, dict) and isinstance(entry.get("compare_judge"), dict):
            return dict(entry["compare_judge"])
    return {}


def run_compare(options: CompareOptions, log: Log | None = None, judge: Any = None) -> dict[str, Any]:
    """Run the comparison pipeline and write ``compare.json`` / ``compare.md`` into its run directory;
    ``judge``: a teacher object to judge with instead of the pipeline's."""
    spec = load_pipeline(options.pipeline, compare_overrides(options))
    result = run_pipeline(spec, RunOptions(out_dir=options.out, limit=options.limit), teacher=judge, log=log)
    records = [Record.from_dict(row) for row in read_jsonl(result.out_dir / "trace.jsonl", "trace")]
    judge = next(s["config"] for s in result.manifest["stages"] if s["kind"] == "compare_judge")
    labels = labels_for(options.models)
    report = summarize(records, labels, judge["tie_margin"], options.bootstrap, spec.seed, judge["min_swap_agreement"])
    report["judge"] = result.manifest["teacher"]
    write_atomic(result.out_dir / "compare.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_atomic(result.out_dir / "compare.md", "\n".join(format_report(report)) + "\n")
    report["out_dir"] = str(result.out_dir)
    return report


def outcome(p_a: float, tie_margin: float) -> str:
    """ "win" (for a), "loss" or "tie" from the judge's P(a better)."""
    if p_a > 0.5 + tie_margin:
        return "win"
    if p_a < 0.5 - tie_margin:
        return "loss"
    return "tie"


def win_rate(outcomes: list[str]) -> float | None:
    """Wins plus half the ties, over all judgements."""
    if not outcomes:
        return None
    return (outcomes.count("win") + 0.5 * outcomes.count("tie")) / len(outcomes)


def bootstrap_interval(per_prompt: list[list[str]], rounds: int, seed: int) -> tuple[float, float] | None:
    """95% percentile interval of the win rate, resampling prompts (a prompt's judgements stay together)."""
    if not per_prompt or rounds < 1:
        return None
    rng = random.Random(seed)
    rates = []
    for _ in range(rounds):
        sample = [o for _ in per_prompt for o in per_prompt[rng.randrange(len(per_prompt))]]
        rate = win_rate(sample)
        if rate is not None:
            rates.append(rate)
    rates.sort()
    return rates[int(0.025 * (len(rates) - 1))], rates[int(0.975 * (len(rates) - 1))]


def summarize(
    records: list[Record],
    labels: list[str],
    tie_margin: float,
    rounds: int,
    seed: int,
    min_swap_agreement: float = 1 - MAX_FLIP_RATE,
) -> dict[str, Any]:
    """Per pair of models: win/tie/loss, win rate with its interval, per principle, swap agreement (and whether
    it is high enough for the verdicts to mean anything) and the largest wins and losses; per model: harmful
    compliance and benign refusal shares."""
    pairs = []
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            pairs.append(_pair(records, a, b, tie_margin, rounds, seed, min_swap_agreement))
    safety = {}
    for label in labels:
        harmful = [(REFUSALS.of(r) or {})[label] for r in records if HARMFUL.of(r) is True]
        benign = [(REFUSALS.of(r) or {})[label] for r in records if HARMFUL.of(r) is False]
        safety[label] = {
            "harmful_prompts": len(harmful),
            "harmful_compliance": None if not harmful else round(1 - sum(harmful) / len(harmful), 4),
            "benign_prompts": len(benign),
            "benign_refusal": None if not benign else round(sum(benign) / len(benign), 4),
        }
    notes = [f"{p['a']} vs {p['b']}: {p['note']}" for p in pairs if p["note"]]
    return {
        "models": labels,
        "prompts": len(records),
        "tie_margin": tie_margin,
        "min_swap_agreement": min_swap_agreement,
        "pairs": pairs,
        "safety": safety,
        "notes": notes,
    }


def _pair(
    records: list[Record], a: str, b: str, tie_margin: float, rounds: int, seed: int, min_agreement: float
) -> dict[str, Any]:
    per_prompt: list[list[str]] = []
    by_principle: dict[str, list[str]] = {}
    scored: list[tuple[float, Record]] = []
    agree, orders = 0, 0
    for record in records:
        found = [c for c in COMPARISONS.of(record) or [] if c["a"] == a and c["b"] == b]
        if not found:
            continue
        outcomes = [outcome(c["p_a"], tie_margin) for c in found]
        per_prompt.append(outcomes)
        for c, o in zip(found, outcomes, strict=True):
            by_principle.setdefault(c["principle"], []).append(o)
        scored.append((sum(c["p_a"] for c in found) / len(found), record))
        for step in record.steps:
            if COMPARISON_STEP.is_(step) and step.get("a") == a and step.get("b") == b:
                orders += 1
                agree += swap_agrees(step["ab"], step["ba"])
    flat = [o for outcomes in per_prompt for o in outcomes]
    interval = bootstrap_interval(per_prompt, rounds, seed)
    scored.sort(key=lambda item: item[0])
    return {
        "a": a,
        "b": b,
        **_counts(flat),
        "win_rate": _round(win_rate(flat)),
        "interval_95": None if interval is None else [round(interval[0], 4), round(interval[1], 4)],
        "swap_agreement": _round(agree / orders if orders else None),
        "reliable": bool(orders) and agree / orders >= min_agreement,
        "note": position_noise(agree, orders, min_agreement),
        "per_principle": {
            name: {**_counts(o), "win_rate": _round(win_rate(o))} for name, o in sorted(by_principle.items())
        },
        "largest_wins": [_example(r, a, b, p) for p, r in reversed(scored[-3:]) if p > 0.5],
        "largest_losses": [_example(r, a, b, p) for p, r in scored[:3] if p < 0.5],
    }


def _counts(outcomes: list[str]) -> dict[str, int]:
    return {"wins": outcomes.count("win"), "ties": outcomes.count("tie"), "losses": outcomes.count("loss")}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _example(record: Record, a: str, b: str, p_a: float) -> dict[str, Any]:
    answers = ANSWERS.of(record) or {}
    return {"id": record.id, "prompt": record.prompt, "p_a": round(p_a, 4), a: answers[a], b: answers[b]}


def format_report(report: dict[str, Any]) -> list[str]:
    """The comparison as Markdown (also what the CLI prints)."""
    lines = [f"# Comparison of {', '.join(report['models'])} on {report['prompts']} prompts", ""]
    lines += [
        "| A vs B | wins | ties | losses | win rate of A (95% CI) | swap agreement |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for pair in report["pairs"]:
        interval = pair["interval_95"]
        ci = f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""
        rate = "–" if pair["win_rate"] is None else f"{pair['win_rate']:.2f}{ci}"
        agreement = "–" if pair["swap_agreement"] is None else f"{pair['swap_agreement']:.0%}"
        counts = f"{pair['wins']} | {pair['ties']} | {pair['losses']}"
        lines.append(f"| {pair['a']} vs {pair['b']} | {counts} | {rate} | {agreement} |")
    lines += ["", "| model | harmful prompts answered (compliance) | benign prompts refused |"]
    lines.append("| --- | --- | --- |")
    for label, s in report["safety"].items():
        comply = "–" if s["harmful_compliance"] is None else f"{s['harmful_compliance']:.0%} of {s['harmful_prompts']}"
        refuse = "–" if s["benign_refusal"] is None else f"{s['benign_refusal']:.0%} of {s['benign_prompts']}"
        lines.append(f"| {label} | {comply} | {refuse} |")
    for note in report.get("notes") or []:
        lines += ["", f"**Note:** {note}"]
    return lines
