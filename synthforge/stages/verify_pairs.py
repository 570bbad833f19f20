"""Judge-verified CAI pairs: SL-CAI assumes the revision beats the first answer; with weak teachers it often
doesn't. The judge (the RL-CAI judge's machinery, both orders) compares chosen and rejected under the
principle that drove the revision. A pair it prefers in both orders by ``margin`` is kept with its probability
as ``confidence`` (a column of ``dpo.jsonl``); one it rejects goes to the drop ledger; an undecided one (the
orders disagree, or inside the margin) leaves the DPO set, its revision staying an SFT row by default (SL-CAI's
SFT data doesn't need the judge).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from synthforge.annotations import PREFERENCE, Preference
from synthforge.constitution import Principle
from synthforge.records import Drop, Record, same_text
from synthforge.settings import SpecError
from synthforge.stages.base import PLACEHOLDER, Stage
from synthforge.stages.helpers.judging import (
    Juried,
    JuryVerdict,
    Pair,
    SwapChecks,
    judge_notes,
    judge_question,
    jury_pairs,
    measured_note,
    tally_jury,
    tally_verdict,
)
from synthforge.stages.helpers.metrics import GroupSpec, Metrics
from synthforge.teachers.base import CHOICE, Conversation, Teacher
from synthforge.trace import REVISION_STEP, VERIFICATION_STEP


@dataclass
class VerifyPairsConfig(SwapChecks):
    """``margin``: keep a pair when the judge's P(chosen better) ≥ 0.5 + margin; ``on_reject``: ``drop`` (into
    the ledger) or ``keep`` (only record the judge's probability as ``confidence``); and :class:`SwapChecks`'
    disagreement, max_flip_rate, min_judged, on_unreliable."""

    constitution: str = "harmless"
    template: str = "judge"
    margin: float = 0.0
    on_reject: str = "drop"
    undecided: str = "sft"  # an undecided pair: sft (the revision stays an SFT row, no DPO pair) or drop

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.margin < 0.5:
            raise ValueError("margin must be in [0, 0.5)")
        if self.on_reject not in ("drop", "keep"):
            raise ValueError(f"on_reject must be drop or keep, got {self.on_reject!r}")
        if self.undecided not in ("sft", "drop"):
            raise ValueError(f"undecided must be sft or drop, got {self.undecided!r}")


class VerifyPairs(Juried, Stage):
    """Reads ``prompt``, ``response`` (chosen), ``rejected``; keeps pairs the judge prefers, with ``confidence``."""

    kind = "verify_pairs"
    traces = (VERIFICATION_STEP,)
    annotates = (PREFERENCE,)
    tags = ("constitutional-ai",)
    Config = VerifyPairsConfig
    reads = ("prompt", "response", "rejected")
    needs = frozenset({CHOICE})
    metric_groups = {
        "principle": GroupSpec(
            counts=("verified",),
            rates={"judge_prefers_revision": ("preferred", "verified")},
            labels={"verified": "pairs verified", "judge_prefers_revision": "judge prefers revision"},
        )
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        constitution = self.use_constitution(self.config.constitution)
        self.by_name = {p.name: p for p in constitution.principles if p.compare}
        if not self.by_name:
            raise SpecError(f"{self.where}.constitution: {constitution.name} has no 'compare:' questions")
        self.template = self.use_template("judge", self.config.template)
        self.measured()  # a judge_report that isn't one fails validation

    def tally(self, step: dict, metrics: Metrics) -> None:
        if VERIFICATION_STEP.is_(step):
            metrics.add("principle", step["principle"], verified=1, preferred=step["p_chosen"] >= 0.5)
            tally_verdict(step, metrics)
            tally_jury(step, metrics)
            metrics.count("undecided", step.get("outcome") == "undecided")

    def halt(self, summary: dict) -> str | None:
        return self.config.halt(summary.get("counters", {}))

    def notes(self, summary: dict) -> list[str]:
        counters = summary.get("counters", {})
        notes = judge_notes(counters, self.config, "pairs")
        measured = self.measured()
        if measured is not None:
            notes.append(measured_note(measured))
        if counters.get("undecided"):
            kept = "kept as SFT rows" if self.config.undecided == "sft" else "dropped"
            notes.append(
                f"{int(counters['undecided'])} of {int(counters.get('judged', 0))} pairs undecided (the judge's two "
                f"orders disagree, or its margin is below {self.config.margin:g}): no DPO pair; their revisions {kept}"
            )
        return notes

    def principle_of(self, record: Record) -> Principle:
        """The principle of the record's last revision (when it has a compare question), else the first one."""
        names = [s.get("principle") for s in REVISION_STEP.in_(record.steps)]
        return next((self.by_name[n] for n in reversed(names) if n in self.by_name), next(iter(self.by_name.values())))

    def question(self, record: Record, principle: Principle, first: str, second: str) -> Conversation:
        return judge_question(self.template, record, principle, first, second)

    def judged(self, batch: list[Record], teacher: Teacher, judges: dict[str, Teacher]) -> list[Record | Drop]:
        """Each pair (chosen shown first, then swapped) judged by each of ``judges`` (one, or a jury)."""
        paired = [i for i, r in enumerate(batch) if r.rejected and not same_text(r.response or "", r.rejected)]
        pairs = [Pair(batch[i], batch[i].response, batch[i].rejected, (self.principle_of(batch[i]),)) for i in paired]
        judged = jury_pairs(judges, self.template, pairs, self.config)
        results: list[Record | Drop] = list(batch)
        for i, pair, (verdict, jury) in zip(paired, pairs, judged, strict=True):
            results[i] = self._checked(batch[i], pair.principles[0], verdict, jury)
        return results

    def _checked(self, record: Record, principle: Principle, verdict, jury: JuryVerdict | None) -> Record | Drop:
        """The record with the judge's verdict: kept (a DPO pair), undecided (SFT only, or dropped) or rejected."""
        p_chosen = verdict.p_first
        winner = verdict.winner(self.config.disagreement)
        split = jury is not None and not jury.unanimous and self.config.jury_split != "keep"
        if split and self.config.jury_split == "drop":
            outcome = "dropped"
        elif split:
            outcome = "undecided"
        elif winner == "tie" and self.config.disagreement == "drop" and verdict.flipped:
            outcome = "dropped"
        elif winner == "tie" or (winner == "first" and p_chosen < 0.5 + self.config.margin):
            outcome = "undecided"
        else:
            outcome = "kept" if winner == "first" else "rejected"
        step = VERIFICATION_STEP.make(
            self.name,
            principle=principle.name,
            p_chosen=p_chosen,
            ab=verdict.ab[principle.name],
            ba=verdict.ba[principle.name],
            outcome=outcome,
            **verdict.summary(),
            **({"teacher": None, **jury.summary(), "jury": self.config.jury} if jury is not None else {}),
        )
        preference = Preference(p_chosen, p_chosen, True, verified=True, tie=outcome == "undecided")  # tie: no DPO pair
        checked = replace(PREFERENCE.on(record, preference), steps=[*record.steps, step])
        orders = f"P(revision) {verdict.first_when_a:.3f} shown first, {verdict.first_when_b:.3f} shown second"
        if outcome == "dropped" and split:
            return self.drop(checked, f"jury split ({', '.join(f'{n}: {v}' for n, v in jury.votes.items())}): dropped")
        if outcome == "dropped":
            return self.drop(checked, f"judge's two orders disagree ({orders})")
        if outcome == "undecided" and self.config.undecided == "drop":
            return self.drop(checked, f"judge undecided ({orders}; margin {self.config.margin:g})")
        if outcome == "rejected" and self.config.on_reject == "drop":
            return self.drop(
                checked, f"judge does not prefer the revision (P = {p_chosen:.3f} < {0.5 + self.config.margin:g})"
            )
        return checked

    def most_calls(self, records: int, candidates: int) -> dict[str, int]:
        return {"verification": records * 2 * max(1, len(self.config.judges))}  # both orders, each juror

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        principle = next(iter(self.by_name.values()))
        chosen, rejected = PLACEHOLDER.format("revision"), PLACEHOLDER.format("first answer")
        return [("verification", self.question(record, principle, chosen, rejected))]
