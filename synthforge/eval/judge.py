"""``synthforge eval judge``: measure an AI judge against human-labelled preference pairs.

The judge answers the pipelines' multiple-choice question about each pair in both orders (the judging stages'
one loop). It measures; it never drops. Each order is one vote for the human's choice or against it (a verdict
that flips with the order is one of each; p = 0.5 is half a vote); the report adds the bootstrap interval, the
flip, first-position, longer-answer and tie rates, the calibration error of its confidence, the accuracy of
"always the longer answer" and "always the first" on the same pairs, and whether the judge is reliable.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthforge.constitution import Constitution, Principle
from synthforge.errors import UserError
from synthforge.hashing import file_sha256
from synthforge.records import Record, same_text
from synthforge.rows import dialogue, iter_rows, where
from synthforge.stages.helpers.judging import MAX_FLIP_RATE, Pair, Verdict, judge_pairs
from synthforge.teachers.base import CHOICE, Teacher

MADE_BY = "synthforge eval judge"
BINS = 10  # calibration: equal-width confidence bins over [0.5, 1]


@dataclass(frozen=True)
class HumanPair:
    """A conversation, and the answer a human preferred to another."""

    record: Record  # the turns before the answer (its prompt: the last user turn)
    chosen: str
    rejected: str


@dataclass
class JudgeEvalConfig:
    """How ``eval judge`` asks and what it calls reliable."""

    principles: int = 1  # compare questions asked per pair, drawn from the constitution (0: every one)
    chain_of_thought: bool = False  # the judge reasons before answering (probabilities clamped to [0.4, 0.6])
    max_flip_rate: float = MAX_FLIP_RATE  # a judge flipping with the order more often than this is unreliable
    bootstrap: int = 1000  # resamples of the pairs for the accuracy's 95% interval
    seed: int = 0  # principle draws and the bootstrap
    batch_size: int = 16  # pairs asked per teacher call

    def __post_init__(self) -> None:
        if self.principles < 0 or self.bootstrap < 1 or self.batch_size < 1:
            raise ValueError("principles must be >= 0, bootstrap and batch_size >= 1")
        if not 0 <= self.max_flip_rate <= 1:
            raise ValueError("max_flip_rate must be in [0, 1]")


def read_pairs(path: Path, limit: int | None = None) -> tuple[list[HumanPair], int]:
    """The human-labelled pairs of a file: TRL preference rows (prompt/chosen/rejected, conversational or not)
    or HH-RLHF chosen/rejected transcripts (a shared dialogue, a different last answer). Returns the pairs and
    how many were skipped because their two answers are the same text."""
    pairs, identical = [], 0
    for number, row, _ in iter_rows(path, str(path)):
        found = dialogue(row)
        chosen = found.answer() if found else None
        rejected = found.rejected[-1].get("content") if found and found.rejected else None
        turns = found.prompt if found else []
        if (
            not isinstance(chosen, str)
            or not isinstance(rejected, str)
            or not any(m.get("role") == "user" for m in turns)
        ):
            raise UserError(
                f"{where(str(path), number, number)}: expected a preference pair (prompt/chosen/rejected, or HH-RLHF "
                "chosen/rejected transcripts)"
            )
        if same_text(chosen, rejected):
            identical += 1
            continue
        last = max(i for i, m in enumerate(turns) if m.get("role") == "user")
        record = Record(id=f"pair-{number}", prompt=turns[last]["content"], history=list(turns[:last]))
        pairs.append(HumanPair(record, chosen, rejected))
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise UserError(f"{path}: no preference pairs to measure (identical answers skipped: {identical})")
    return pairs, identical


def comparing(constitution: Constitution) -> Constitution:
    """The constitution's principles that have a compare question (the ones a judge can be asked)."""
    return Constitution(constitution.name, tuple(p for p in constitution.principles if p.compare))


def principles_for(usable: Constitution, count: int, seed: int, index: int) -> tuple[Principle, ...]:
    """The compare questions asked about pair ``index``: ``count`` drawn by weight (seeded), or all of them."""
    if not count or count >= len(usable.principles):
        return usable.principles
    return tuple(usable.sample(random.Random(f"{seed}:{index}"), count))


def ask_judge(
    teacher: Teacher,
    template: Any,
    pairs: Sequence[HumanPair],
    principles: Callable[[int], tuple[Principle, ...]],
    config: JudgeEvalConfig,
    progress: Callable[[int], None] = lambda n: None,
) -> list[Verdict]:
    """Every pair asked in both orders, the human's choice shown first in one and second in the other."""
    verdicts: list[Verdict] = []
    for start in range(0, len(pairs), config.batch_size):
        batch = pairs[start : start + config.batch_size]
        asked = [Pair(p.record, p.chosen, p.rejected, principles(start + k)) for k, p in enumerate(batch)]
        verdicts += judge_pairs(teacher, template, asked, chain_of_thought=config.chain_of_thought)
        progress(len(batch))
    return verdicts


def _vote(p_chosen: float) -> float:
    return 1.0 if p_chosen > 0.5 else 0.0 if p_chosen < 0.5 else 0.5


def measure(verdicts: Sequence[Verdict], config: JudgeEvalConfig) -> dict[str, Any]:
    """The figures of a judge's verdicts (the first answer of each is the human's choice)."""
    n = len(verdicts)
    scores = [
        (_vote(v.first_when_a) + _vote(v.first_when_a if v.first_when_b is None else v.first_when_b)) / 2
        for v in verdicts
    ]
    accuracy = sum(scores) / n
    low, high = bootstrap_interval(scores, config.bootstrap, config.seed)
    shown_first, decided = (sum(v.positions()[k] for v in verdicts) for k in (0, 1))
    longer = [found for v in verdicts if (found := v.prefers_longer()) is not None]
    baselines = {
        "longer": sum(1.0 if v.first_longer else 0.5 if v.first_longer is None else 0.0 for v in verdicts) / n,
        "first": 0.5,  # always the answer shown first: one vote for the human's choice, one against, every pair
    }
    report = {
        "n": n,
        "accuracy": round(accuracy, 4),
        "accuracy_interval": [round(low, 4), round(high, 4)],
        "flip_rate": round(sum(v.flipped for v in verdicts) / n, 4),
        "first_position_rate": round(shown_first / decided, 4) if decided else None,
        "longer_rate": round(sum(longer) / len(longer), 4) if longer else None,
        "tie_rate": round(sum(v.winner() == "tie" for v in verdicts) / n, 4),
        "calibration_error": round(calibration_error(verdicts), 4),
        "baselines": {k: round(v, 4) for k, v in baselines.items()},
    }
    report["reliable"], report["reason"] = reliability(report, config.max_flip_rate)
    return report


def bootstrap_interval(scores: Sequence[float], resamples: int, seed: int) -> tuple[float, float]:
    """The 95% percentile interval of the mean of ``scores``, resampling them with replacement."""
    rng = random.Random(seed)
    n = len(scores)
    means = sorted(sum(scores[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * (resamples - 1))], means[int(round(0.975 * (resamples - 1)))]


def calibration_error(verdicts: Sequence[Verdict]) -> float:
    """Expected calibration error: how far the judge's confidence (both orders averaged) is from how often it is
    right, over equal-width confidence bins weighted by their pairs (a tie counts as half right)."""
    bins: list[list[tuple[float, float]]] = [[] for _ in range(BINS)]
    for v in verdicts:
        confidence = max(v.p_first, 1 - v.p_first)
        bins[min(int((confidence - 0.5) * 2 * BINS), BINS - 1)].append((confidence, _vote(v.p_first)))
    total = len(verdicts)
    return sum(len(b) / total * abs(sum(c for c, _ in b) / len(b) - sum(r for _, r in b) / len(b)) for b in bins if b)


def reliability(report: dict[str, Any], max_flip_rate: float) -> tuple[bool, str]:
    """Reliable only when the interval's lower bound is above 0.5, the accuracy beats both baselines, and the
    flip rate is at most ``max_flip_rate``; else why not."""
    problems = []
    if report["accuracy_interval"][0] <= 0.5:
        problems.append(f"the 95% interval of its accuracy reaches 0.5 ({report['accuracy_interval'][0]:.3f})")
    best = max(report["baselines"], key=lambda k: report["baselines"][k])
    if report["accuracy"] <= report["baselines"][best]:
        problems.append(f"it is no better than always choosing the {best} answer ({report['baselines'][best]:.3f})")
    if report["flip_rate"] > max_flip_rate:
        problems.append(
            f"its verdict flips with the order on {report['flip_rate']:.0%} of pairs (> {max_flip_rate:.0%})"
        )
    if problems:
        return False, "; ".join(problems)
    return (
        True,
        f"accuracy {report['accuracy']:.3f} above chance and both baselines; flip rate {report['flip_rate']:.0%}",
    )


def provenance(path: Path, identical: int, judge: dict[str, Any], asked: dict[str, Any]) -> dict[str, Any]:
    """What the figures are of: the judge's identity, the pairs' file and hash, how it was asked."""
    return {
        "made_by": MADE_BY,
        "judge": judge,
        "pairs": {"file": path.name, "sha256": file_sha256(path), "skipped_identical": identical},
        "asked": asked,
    }


CALIBRATION = ("pipelines", "eval", "judge-calibration.jsonl")  # the shipped human-labelled pairs, where present


@dataclass
class JudgeRun:
    """One ``eval judge`` invocation, as the CLI gives it."""

    pairs: Path | None  # None: the calibration set synthforge ships
    judge: str = "embedded"  # any --teacher reference
    constitution: str = "harmless"
    template: str = "judge"
    principles: int = 1
    chain_of_thought: bool = False
    limit: int | None = None
    max_flip_rate: float = MAX_FLIP_RATE
    seed: int = 0
    out: Path | None = None  # REPORT.json
    jury: tuple[str, ...] = ()  # two or more teacher references judging together (instead of ``judge``)
    jury_rule: str = "mean"  # mean or majority (see stages.judging.jury_verdict)


def run_judge_eval(
    run: JudgeRun,
    teacher: Teacher | None = None,
    log: Callable[[str], None] | None = None,
    teachers: dict[str, Teacher] | None = None,
):
    """Measure the judge ``run`` names (or ``teacher``) on its pairs; write the report when ``run.out`` is set."""
    import json

    from synthforge import __version__
    from synthforge.builtin import builtin_path
    from synthforge.constitution import load_constitution
    from synthforge.files import check_not_input, claim_file, output_lock, write_atomic
    from synthforge.prompts import load_template

    path = run.pairs.expanduser() if run.pairs is not None else builtin_path(*CALIBRATION)
    if run.pairs is None and not path.is_file():
        raise UserError(
            "no calibration set ships with this synthforge: give PAIRS (TRL preference rows or HH-RLHF "
            "chosen/rejected transcripts, 'chosen' being the human's choice)"
        )
    config = JudgeEvalConfig(run.principles, run.chain_of_thought, run.max_flip_rate, seed=run.seed)
    if run.out is not None:
        check_not_input(run.out, [path], "--out")
        claim_file(run.out.expanduser(), _ours, "--out", "eval judge")
    pairs, identical = read_pairs(path, run.limit)
    constitution = load_constitution(run.constitution, builtin_path("constitutions"))
    usable = comparing(constitution)
    if not usable.principles:
        raise UserError(f"--constitution {run.constitution}: it has no 'compare:' questions; the judge needs them")
    template = load_template(run.template, builtin_path("prompts"))
    refs = list(run.jury) or [run.judge]
    given = {**(teachers or {}), **({run.judge: teacher} if teacher is not None else {})}
    by_judge, identities = verdicts_by_judge(refs, given, pairs, template, usable, config)
    if len(refs) == 1:
        report, identity = measure(by_judge[refs[0]], config), identities[refs[0]]
    else:
        report, identity = measure_jury(by_judge, config, run.jury_rule, identities)
    asked = {
        "constitution": constitution.name,
        "constitution_sha256": constitution.sha256,
        "template": run.template,
        "principles": config.principles,
        "chain_of_thought": config.chain_of_thought,
    }
    report |= provenance(path, identical, identity, asked)
    report["thresholds"] = {"max_flip_rate": config.max_flip_rate, "interval": 0.95, "bootstrap": config.bootstrap}
    report["synthforge_version"] = __version__
    if run.out is not None:
        out = run.out.expanduser()
        with output_lock(out, "--out", "eval judge"):
            claim_file(out, _ours, "--out", "eval judge")
            write_atomic(out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def verdicts_by_judge(
    refs: list[str],
    given: dict[str, Teacher],
    pairs: Sequence[HumanPair],
    template: Any,
    usable: Constitution,
    config: JudgeEvalConfig,
) -> tuple[dict[str, list[Verdict]], dict[str, dict[str, Any]]]:
    """Each judge's verdicts on every pair (a teacher of ``given``, else built from its reference and probed on
    first use), and each one's identity."""
    from tqdm.auto import tqdm

    from synthforge.teachers.factory import LazyTeacher, spec_from_ref

    owned = {ref: LazyTeacher(spec_from_ref(ref), frozenset({CHOICE})) for ref in refs if ref not in given}
    judges = {ref: given.get(ref) or owned[ref] for ref in refs}
    try:
        with tqdm(total=len(pairs) * len(refs), desc="eval judge", unit="pair", disable=None) as bar:
            by_judge = {
                ref: ask_judge(
                    judge,
                    template,
                    pairs,
                    lambda i: principles_for(usable, config.principles, config.seed, i),
                    config,
                    bar.update,
                )
                for ref, judge in judges.items()
            }
    finally:
        for judge in owned.values():
            judge.close()
    return by_judge, {ref: dict(judge.identity) for ref, judge in judges.items()}


def measure_jury(
    by_judge: dict[str, list[Verdict]], config: JudgeEvalConfig, rule: str, identities: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The figures of a jury's verdicts (made as a judging stage makes them), each judge's own accuracy and flip
    rate beside them, and the jury's agreement; and the jury's identity (its judges')."""
    from synthforge.stages.helpers.judging import jury_agreement, jury_verdict, tally_jury
    from synthforge.stages.helpers.metrics import Metrics

    refs = list(by_judge)
    juries = [jury_verdict({r: by_judge[r][i] for r in refs}, rule, "tie") for i in range(len(by_judge[refs[0]]))]
    report = measure([j.verdict for j in juries], config)
    metrics = Metrics()
    for jury in juries:
        tally_jury(jury.summary(), metrics)
    agreement, kappa = jury_agreement(metrics.counters) or (None, None)
    alone = {r: measure(by_judge[r], config) for r in refs}
    report["jury"] = {
        "rule": rule,
        "pairwise_agreement": agreement,
        "fleiss_kappa": kappa,
        "unanimous_rate": metrics.counters.get("jury_unanimous", 0) / max(1, len(juries)),
        "by_judge": {r: {k: alone[r][k] for k in ("accuracy", "accuracy_interval", "flip_rate")} for r in refs},
    }
    names = [identities[r].get("name") or identities[r].get("model") or r for r in refs]
    return report, {"backend": "jury", "name": f"jury ({rule}) of {', '.join(map(str, names))}", "judges": identities}


def _ours(path: Path) -> bool:
    from synthforge.files import made_by

    return made_by(path, MADE_BY)


def format_report(report: dict[str, Any]) -> list[str]:
    """The figures as the CLI prints them."""
    low, high = report["accuracy_interval"]
    rate = lambda key: "n/a" if report[key] is None else f"{report[key]:.1%}"  # noqa: E731
    return [
        f"judge {report['judge'].get('name') or report['judge'].get('model') or report['judge'].get('backend')} on "
        f"{report['n']} pairs ({report['pairs']['skipped_identical']} with identical answers skipped)",
        f"accuracy {report['accuracy']:.3f} (95% interval {low:.3f}-{high:.3f}); always longer "
        f"{report['baselines']['longer']:.3f}, always first {report['baselines']['first']:.3f}",
        f"flip rate {rate('flip_rate')}, first position {rate('first_position_rate')}, longer answer "
        f"{rate('longer_rate')}, ties {rate('tie_rate')}, calibration error {report['calibration_error']:.3f}",
        f"{'RELIABLE' if report['reliable'] else 'UNRELIABLE'}: {report['reason']}",
        *_jury_lines(report.get("jury")),
    ]


def _jury_lines(jury: dict[str, Any] | None) -> list[str]:
    if not jury:
        return []
    kappa = "undefined" if jury["fleiss_kappa"] is None else f"{jury['fleiss_kappa']:.2f}"
    lines = [
        f"jury ({jury['rule']}): pairwise agreement {jury['pairwise_agreement']:.0%}, Fleiss' kappa {kappa}, "
        f"unanimous {jury['unanimous_rate']:.0%}"
    ]
    for name, alone in jury["by_judge"].items():
        flips = "n/a" if alone["flip_rate"] is None else f"{alone['flip_rate']:.0%}"
        lines.append(f"  {name} alone: accuracy {alone['accuracy']:.3f}, flip rate {flips}")
    return lines
