"""The AI judge's machinery, shared by ``judge``, ``verify_pairs``, ``compare_judge`` and ``eval judge``: a
multiple-choice question about two answers, read as P(A) from the teacher's log-probabilities of "(A)" and "(B)",
asked in both orders (:func:`judge_pairs`, the one both-orders loop). A :class:`Verdict` says whether the two
orders agree: a judge whose verdict follows the position an answer is shown in labels nothing."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthforge.constitution import Principle
from synthforge.files import read_text
from synthforge.hashing import file_sha256
from synthforge.records import Record
from synthforge.settings import OMIT_IF_DEFAULT, SpecError
from synthforge.teachers.base import Conversation, Teacher, choice_logprobs

OPTIONS = ("(A)", "(B)")
MAX_FLIP_RATE = 0.4  # the one threshold: a judge whose verdict flips with the order more often than this is noise
DISAGREEMENT = ("tie", "drop", "average")  # what a verdict whose two orders disagree becomes
EVAL_JUDGE = "synthforge eval judge"  # the made_by of its reports
ON_UNRELIABLE = ("warn", "stop")  # what a run does once its judge is found unreliable
JURY = ("mean", "majority")  # how several judges' verdicts make one
JURY_SPLIT = ("keep", "tie", "drop")  # what a jury that is not unanimous does


def jury_problem(judges: Sequence[str]) -> str | None:
    """Why ``judges`` can't be a jury (none is none: the stage's own teacher judges); None when it can."""
    if len(set(judges)) != len(judges) or len(judges) == 1:
        return f"a jury is two or more different judges, got {list(judges)}"
    return None


@dataclass
class SwapChecks:
    """The settings every pairwise judging stage shares: what a verdict whose orders disagree becomes, and when
    and how the judge is held to the one flip-rate threshold. Stage configs inherit them."""

    disagreement: str = "tie"  # orders that disagree: tie (no pair, ledgered), drop (ledgered), average (decides)
    max_flip_rate: float = MAX_FLIP_RATE  # above it (after min_judged pairs) the judge is called unreliable
    min_judged: int = 20  # pairs judged in both orders before the flip rate is held against the judge
    # warn: a loud note in the log, card and report; stop: the run stops there (finished work is checkpointed)
    on_unreliable: str = "warn"
    # a jury of named teachers (`teachers:`); none: the stage's own. (Settings added later are left out of the
    # cache key at their defaults: runs made before them are reused.)
    judges: list[str] = field(default_factory=list, metadata={OMIT_IF_DEFAULT: True})
    # mean: per principle and order, the judges' mean P(A); majority: the share of judges preferring (A)
    jury: str = field(default="mean", metadata={OMIT_IF_DEFAULT: True})
    # a jury that is not unanimous: keep (the rule decides), tie (no pair) or drop
    jury_split: str = field(default="keep", metadata={OMIT_IF_DEFAULT: True})
    # an `eval judge` report (REPORT.json, relative to the pipeline file) that measured this stage's judge: the
    # manifest and card point at it; it changes no label (not part of the cache key)
    judge_report: str | None = None

    def __post_init__(self) -> None:
        if self.disagreement not in DISAGREEMENT:
            raise ValueError(f"disagreement must be one of {', '.join(DISAGREEMENT)}, got {self.disagreement!r}")
        if not 0 <= self.max_flip_rate <= 1 or self.min_judged < 1:
            raise ValueError("max_flip_rate must be in [0, 1] and min_judged >= 1")
        if self.on_unreliable not in ON_UNRELIABLE:
            raise ValueError(f"on_unreliable must be one of {', '.join(ON_UNRELIABLE)}, got {self.on_unreliable!r}")
        if self.jury not in JURY or self.jury_split not in JURY_SPLIT:
            raise ValueError(
                f"jury must be one of {', '.join(JURY)} and jury_split one of {', '.join(JURY_SPLIT)}, "
                f"got {self.jury!r} and {self.jury_split!r}"
            )
        problem = jury_problem(self.judges)
        if problem:
            raise ValueError(f"judges: {problem} (one judge: teacher:)")

    def unreliable(self, counters: dict[str, float], what: str = "pairs") -> str | None:
        """Why the judge is unreliable, from a stage's counters (:func:`tally_verdict`); None while it isn't, or
        before ``min_judged`` pairs were judged in both orders."""
        both, flipped = counters.get("judged_both_orders", 0), counters.get("flipped", 0)
        if both < self.min_judged or flipped / both <= self.max_flip_rate:
            return None
        return (
            f"its verdict changes with the order the answers are shown in for {flipped / both:.0%} of {int(both)} "
            f"{what} (above {self.max_flip_rate:.0%}): these labels are position noise; use a stronger judge "
            "(measure one with synthforge eval judge)"
        )

    def halt(self, counters: dict[str, float], what: str = "pairs") -> str | None:
        """With ``on_unreliable: stop``, why the run stops now (see :meth:`unreliable`); else None."""
        reason = self.unreliable(counters, what) if self.on_unreliable == "stop" else None
        return None if reason is None else f"UNRELIABLE JUDGE (on_unreliable: stop): {reason}"


@dataclass(frozen=True)
class Pair:
    """Two answers to judge as final answers to ``record``'s conversation, under each of ``principles``."""

    record: Record
    first: str
    second: str
    principles: tuple[Principle, ...]


@dataclass(frozen=True)
class Verdict:
    """A judge's answer about one :class:`Pair`: per principle, P(A) with the first answer shown as (A) (``ab``)
    and, when asked, with the second shown as (A) (``ba``). The orders are compared after averaging over the
    principles: swap-consistent when both prefer the same answer; p = 0.5 in either order is a tie."""

    ab: dict[str, float]
    ba: dict[str, float] | None
    first_longer: bool | None  # the first answer is longer in characters (None: equally long)

    @property
    def swapped(self) -> bool:
        return self.ba is not None

    @property
    def first_when_a(self) -> float:
        """P(first better) when the first answer is shown first, averaged over the principles."""
        return sum(self.ab.values()) / len(self.ab)

    @property
    def first_when_b(self) -> float | None:
        """P(first better) when the first answer is shown second (None: not asked)."""
        return None if self.ba is None else sum(1.0 - p for p in self.ba.values()) / len(self.ba)

    @property
    def p_first(self) -> float:
        """P(first better), both orders averaged (the soft label)."""
        second = self.first_when_b
        return self.first_when_a if second is None else (self.first_when_a + second) / 2.0

    @property
    def flipped(self) -> bool:
        """The two orders prefer different answers: the verdict follows the position, not the answers."""
        second = self.first_when_b
        return second is not None and (self.first_when_a - 0.5) * (second - 0.5) < 0

    @property
    def consistent(self) -> bool | None:
        """Both orders prefer the same answer (None: only one order was asked)."""
        second = self.first_when_b
        return None if second is None else (self.first_when_a - 0.5) * (second - 0.5) > 0

    def winner(self, disagreement: str = "tie") -> str:
        """ "first", "second" or "tie": a verdict whose orders disagree (or either is exactly 0.5) is a tie, unless
        ``disagreement`` is "average" (the averaged probability decides)."""
        if self.swapped and not self.consistent and disagreement != "average":
            return "tie"
        return "tie" if self.p_first == 0.5 else "first" if self.p_first > 0.5 else "second"

    def positions(self) -> tuple[int, int]:
        """(orders in which the answer shown first was preferred, orders with a preference)."""
        shown_first = [self.first_when_a - 0.5]
        if self.first_when_b is not None:
            shown_first.append(0.5 - self.first_when_b)  # the second answer was shown first
        return sum(d > 0 for d in shown_first), sum(d != 0 for d in shown_first)

    def prefers_longer(self) -> bool | None:
        """Whether the preferred answer (both orders averaged) is the longer one; None when they are equally long
        or the judge is undecided."""
        if self.first_longer is None or self.p_first == 0.5:
            return None
        return (self.p_first > 0.5) == self.first_longer

    def summary(self) -> dict[str, Any]:
        """What a trace step keeps of the verdict (both orders' probabilities, whether they agree)."""
        return {
            "p_first_ab": self.first_when_a,
            "p_first_ba": self.first_when_b,
            "consistent": self.consistent,
            "position_checked": self.swapped,
            "first_longer": self.first_longer,
        }


def judge_pairs(
    teacher: Teacher,
    template: Any,
    pairs: Sequence[Pair],
    swap: bool = True,
    chain_of_thought: bool = False,
    reason: Callable[[list[tuple[int, str, bool, Conversation]]], list[Conversation]] | None = None,
) -> list[Verdict]:
    """The one both-orders loop: every (pair, principle, order) question, scored in one teacher call. ``reason``
    (chain of thought): the judge's reasoning and answer request appended to each question, whose probabilities
    are then clamped to [0.4, 0.6]."""
    asks: list[tuple[int, str, bool, Conversation]] = []
    for i, pair in enumerate(pairs):
        for principle in pair.principles:
            for swapped in (False, True) if swap else (False,):
                first, second = (pair.second, pair.first) if swapped else (pair.first, pair.second)
                question = judge_question(template, pair.record, principle, first, second, chain_of_thought)
                asks.append((i, principle.name, swapped, question))
    extra = reason(asks) if reason is not None else [[] for _ in asks]
    scored = choose(teacher, [ask[3] + more for ask, more in zip(asks, extra, strict=True)])
    ab: list[dict[str, float]] = [{} for _ in pairs]
    ba: list[dict[str, float]] = [{} for _ in pairs]
    for (i, name, swapped, _), p in zip(asks, scored, strict=True):
        (ba if swapped else ab)[i][name] = clamp(p) if reason is not None else p
    return [Verdict(ab[i], ba[i] if swap else None, _longer(pair.first, pair.second)) for i, pair in enumerate(pairs)]


def _longer(first: str, second: str) -> bool | None:
    return None if len(first) == len(second) else len(first) > len(second)


def verdict_of(step: dict[str, Any]) -> Verdict | None:
    """The verdict a trace step keeps (its :meth:`Verdict.summary`), both orders averaged over the principles;
    None for a step without one."""
    ab, ba = step.get("p_first_ab"), step.get("p_first_ba")
    if ab is None:
        return None
    return Verdict({"mean": ab}, None if ba is None else {"mean": 1.0 - ba}, step.get("first_longer"))


def tally_verdict(step: dict[str, Any], metrics: Any) -> None:
    """Count a judged pair's position and length behaviour (flip, first-position and longer-answer rates)."""
    verdict = verdict_of(step)
    if verdict is None:
        return
    metrics.count("judged")
    if verdict.swapped:
        metrics.count("judged_both_orders")
        metrics.count("flipped", verdict.flipped)
    shown_first, decided = verdict.positions()
    metrics.count("order_votes", decided)
    metrics.count("first_position", shown_first)
    longer = verdict.prefers_longer()
    if longer is not None:
        metrics.count("length_decided")
        metrics.count("longer_preferred", longer)


def judge_notes(counters: dict[str, float], checks: SwapChecks, what: str) -> list[str]:
    """The judge's flip, first-position and longer-answer rates, and a loud note when it flips too often."""
    both, votes, decided = (counters.get(k, 0) for k in ("judged_both_orders", "order_votes", "length_decided"))
    rates = []
    if both:
        rates.append(f"flip rate {counters.get('flipped', 0) / both:.0%} of {int(both)}")
    if votes:
        rates.append(f"first position preferred {counters.get('first_position', 0) / votes:.0%}")
    if decided:
        rates.append(f"longer answer preferred {counters.get('longer_preferred', 0) / decided:.0%}")
    notes = ["judge: " + ", ".join(rates)] if rates else []
    agreement = jury_agreement(counters)
    if agreement is not None:
        kappa = "undefined (every vote the same)" if agreement[1] is None else f"{agreement[1]:.2f}"
        notes.append(
            f"jury of {counters['jury_judges'] / counters['jury_pairs']:.0f}: pairwise agreement {agreement[0]:.0%}, "
            f"Fleiss' kappa {kappa}, unanimous on {int(counters.get('jury_unanimous', 0))} of "
            f"{int(counters['jury_pairs'])} {what}"
        )
    reason = checks.unreliable(counters, what)
    if reason is not None:
        notes.append(f"UNRELIABLE JUDGE: {reason}")
    return notes


@dataclass(frozen=True)
class JuryVerdict:
    """Several judges' verdicts on one pair and the one they make (``verdict``, see :func:`jury_verdict`)."""

    verdict: Verdict
    by_judge: dict[str, Verdict]
    votes: dict[str, str]  # judge -> "first", "second" or "tie" (its own verdict, its orders checked)

    @property
    def unanimous(self) -> bool:
        return len(set(self.votes.values())) == 1

    def summary(self) -> dict[str, Any]:
        """What a judgement step keeps of the jury: each judge's orders and vote, and whether they agree."""
        return {
            "judges": list(self.by_judge),
            "votes": self.votes,
            "unanimous": self.unanimous,
            "by_judge": {name: v.summary() for name, v in self.by_judge.items()},
        }


def jury_verdict(by_judge: dict[str, Verdict], rule: str, disagreement: str) -> JuryVerdict:
    """One verdict from several judges', per principle and order: their mean P(A) (``mean``), or the share of judges
    whose P(A) is above 0.5, a tie counting half (``majority``); each judge's vote is its own verdict's winner."""
    verdicts = list(by_judge.values())

    def combine(maps: list[dict[str, float]]) -> dict[str, float]:
        if rule == "majority":
            maps = [{n: 1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5 for n, p in m.items()} for m in maps]
        return {n: sum(m[n] for m in maps) / len(maps) for n in maps[0]}

    ba = None if verdicts[0].ba is None else combine([v.ba for v in verdicts if v.ba is not None])
    combined = Verdict(combine([v.ab for v in verdicts]), ba, verdicts[0].first_longer)
    return JuryVerdict(combined, by_judge, {name: v.winner(disagreement) for name, v in by_judge.items()})


def jury_pairs(
    judges: Mapping[str, Teacher],
    template: Any,
    pairs: Sequence[Pair],
    checks: SwapChecks,
    swap: bool = True,
    chain_of_thought: bool = False,
    reason_for: Callable[[Teacher], Callable[..., list[Conversation]]] | None = None,
) -> list[tuple[Verdict, JuryVerdict | None]]:
    """Each pair judged by each of ``judges`` (:func:`judge_pairs`): the one judge's verdict, or the jury's and
    its votes (``checks.jury`` makes one verdict of several)."""
    by_judge = {
        name: judge_pairs(judge, template, pairs, swap, chain_of_thought, reason_for(judge) if reason_for else None)
        for name, judge in judges.items()
    }
    judged: list[tuple[Verdict, JuryVerdict | None]] = []
    for i in range(len(pairs)):
        verdicts = {name: found[i] for name, found in by_judge.items()}
        if len(verdicts) == 1:
            judged.append((next(iter(verdicts.values())), None))
        else:
            jury = jury_verdict(verdicts, checks.jury, checks.disagreement)
            judged.append((jury.verdict, jury))
    return judged


class Juried:
    """What a pairwise judging stage (its config a :class:`SwapChecks`) inherits before :class:`Stage`: the jury
    among the teachers it names, a ``judged(batch, teacher, judges)`` that :meth:`run_batch` hands them to, and
    the measured report of its judge (``judge_report``) in its provenance and notes."""

    def measured(self) -> dict[str, Any] | None:
        """The ``judge_report`` setting's figures (read once), or None."""
        if self.config.judge_report is None:  # type: ignore[attr-defined]
            return None
        if not hasattr(self, "_measured"):
            base = self.resources.base_dir  # type: ignore[attr-defined]
            self._measured = measured_judge(self.config.judge_report, base, self.where)  # type: ignore[attr-defined]
        return self._measured

    def provenance(self) -> dict[str, Any]:
        measured = self.measured()
        return {"judge_report": measured} if measured is not None else {}

    def teacher_names(self) -> tuple[str, ...]:
        """The jury's judges, or the stage's own teacher (a stage that also samples adds its own)."""
        return tuple(self.config.judges) or (self.teacher_name,)  # type: ignore[attr-defined]

    def run_batch(self, batch: list[Record], team: Mapping[str, Teacher]) -> list[Any]:
        own = self.teacher_name  # type: ignore[attr-defined]
        judges = {name: team[name] for name in self.config.judges} or {own: team[own]}  # type: ignore[attr-defined]
        teacher = team.get(own)  # type: ignore[attr-defined]
        return [self.stamped(r, own) for r in self.judged(batch, teacher, judges)]  # type: ignore[attr-defined]

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Any]:
        """With one teacher standing in for every judge (tests)."""
        assert teacher is not None
        names = self.config.judges or [self.teacher_name]  # type: ignore[attr-defined]
        return self.judged(batch, teacher, dict.fromkeys(names, teacher))  # type: ignore[attr-defined]


def tally_jury(step: dict[str, Any], metrics: Any) -> None:
    """Count a jury's votes on one pair for its agreement: the share of agreeing judge pairs, and Fleiss' κ."""
    votes = list((step.get("votes") or {}).values())
    n = len(votes)
    if n < 2:
        return
    counts = [votes.count(c) for c in ("first", "second", "tie")]
    metrics.count("jury_pairs")
    metrics.count("jury_judges", n)
    metrics.count("jury_agreement", (sum(c * c for c in counts) - n) / (n * (n - 1)))
    for category, count in zip(("first", "second", "tie"), counts, strict=True):
        metrics.count(f"jury_votes_{category}", count)
    metrics.count("jury_unanimous", step.get("unanimous") is True)


def jury_agreement(counters: dict[str, float]) -> tuple[float, float | None] | None:
    """(mean pairwise agreement, Fleiss' κ) of a jury from :func:`tally_jury`'s counters; None before any pair.
    κ is None when every vote fell in one category (agreement by chance is then 1)."""
    pairs = counters.get("jury_pairs", 0)
    if not pairs:
        return None
    agreement = counters.get("jury_agreement", 0) / pairs
    total = sum(counters.get(f"jury_votes_{c}", 0) for c in ("first", "second", "tie"))
    chance = sum((counters.get(f"jury_votes_{c}", 0) / total) ** 2 for c in ("first", "second", "tie"))
    return agreement, None if chance >= 1 else (agreement - chance) / (1 - chance)


REPORT_KEYS = ("n", "accuracy", "accuracy_interval", "flip_rate", "reliable", "reason", "judge")


def measured_judge(ref: str, base_dir: Path | None, where: str) -> dict[str, Any]:
    """What the manifest and card say of an ``eval judge`` report: its file and hash and its figures; a file that
    isn't one is a one-line error naming the setting (its contents are never echoed)."""
    path = Path(ref).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        report = json.loads(read_text(path, "judge report"))
    except (OSError, ValueError):
        report = None
    if not isinstance(report, dict) or report.get("made_by") != EVAL_JUDGE or any(k not in report for k in REPORT_KEYS):
        raise SpecError(f"{where}.judge_report: {path} is not a report of synthforge eval judge (--out REPORT.json)")
    return {"path": path.name, "sha256": file_sha256(path), **{k: report[k] for k in REPORT_KEYS}}


def measured_note(measured: dict[str, Any]) -> str:
    """One line on a measured judge: its accuracy against human labels, and whether it is reliable."""
    low, high = measured["accuracy_interval"]
    judge = measured["judge"] if isinstance(measured["judge"], dict) else {}
    name = judge.get("name") or judge.get("model") or judge.get("backend") or "?"
    verdict = "reliable" if measured["reliable"] else "UNRELIABLE"
    return (
        f"judge measured by eval judge ({measured['path']}: {name}): accuracy {measured['accuracy']:.3f} "
        f"({low:.3f}-{high:.3f}) against human labels on {measured['n']} pairs, {verdict}: {measured['reason']}"
    )


def judge_question(
    template: Any, record: Record, principle: Principle, first: str, second: str, chain_of_thought: bool = False
) -> Conversation:
    """The judge's multiple-choice question: ``principle``'s compare question about ``first`` as (A) and
    ``second`` as (B) as final answers to ``record``'s conversation, rendered by ``template`` (``judge.j2``)."""
    text = template.render(
        prompt=record.prompt,
        history=record.history,
        question=principle.compare,
        response_a=first,
        response_b=second,
        chain_of_thought=chain_of_thought,
    )
    return [{"role": "user", "content": text}]


def option_probability(logprob_a: float, logprob_b: float) -> float:
    """P(A) from the two options' log-probabilities, normalised over the two."""
    top = max(logprob_a, logprob_b)
    a, b = math.exp(logprob_a - top), math.exp(logprob_b - top)
    return a / (a + b)


def clamp(p: float, low: float = 0.4, high: float = 0.6) -> float:
    """Chain-of-thought labels are over-confident; the CAI paper clamps them to [0.4, 0.6]."""
    return min(max(p, low), high)


def first_wins(p_ab: float, p_ba: float | None) -> float:
    """P(first response better) from the A-first order and, if asked, the swapped order (where it is B)."""
    return p_ab if p_ba is None else (p_ab + (1.0 - p_ba)) / 2.0


def swap_agrees(p_ab: float, p_ba: float) -> bool:
    """The judge picked the same answer whichever order it was shown in."""
    return (p_ab > 0.5) == (p_ba < 0.5)


def choose(teacher: Teacher, questions: Sequence[Conversation]) -> list[float]:
    """P(A) of each question, from the teacher's log-probabilities of answering "(A)" or "(B)" (one call)."""
    if not questions:
        return []
    scored = choice_logprobs(teacher, list(questions), [OPTIONS] * len(questions))
    return [option_probability(lp_a, lp_b) for lp_a, lp_b in scored]
