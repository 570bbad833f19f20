"""Judge-verified CAI pairs: SL-CAI assumes the revision beats the first answer; with weak teachers it often
doesn't. The judge (the RL-CAI judge's machinery, both orders) compares chosen and rejected under the
principle that drove the revision; pairs it doesn't prefer by ``margin`` go to the drop ledger with its
probability, and kept pairs carry it as ``confidence`` (a column of ``dpo.jsonl``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from synthforge.constitution import Principle
from synthforge.records import Drop, Record, same_text
from synthforge.settings import SpecError
from synthforge.stages.base import PLACEHOLDER, Stage
from synthforge.stages.judging import choose, first_wins, judge_question
from synthforge.stages.metrics import GroupSpec, Metrics
from synthforge.teachers.base import CHOICE, Conversation, Teacher


@dataclass
class VerifyPairsConfig:
    """``margin``: keep a pair when the judge's P(chosen better) ≥ 0.5 + margin; ``on_reject``: ``drop`` (into
    the ledger) or ``keep`` (only record the judge's probability as ``confidence``)."""

    constitution: str = "harmless"
    template: str = "judge"
    margin: float = 0.0
    on_reject: str = "drop"

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 0.5:
            raise ValueError("margin must be in [0, 0.5)")
        if self.on_reject not in ("drop", "keep"):
            raise ValueError(f"on_reject must be drop or keep, got {self.on_reject!r}")


class VerifyPairs(Stage):
    """Reads ``prompt``, ``response`` (chosen), ``rejected``; keeps pairs the judge prefers, with ``confidence``."""

    kind = "verify_pairs"
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

    def tally(self, step: dict, metrics: Metrics) -> None:
        if step.get("role") == "verification":
            metrics.add("principle", step["principle"], verified=1, preferred=step["p_chosen"] >= 0.5)

    def principle_of(self, record: Record) -> Principle:
        """The principle of the record's last revision (when it has a compare question), else the first one."""
        names = [s.get("principle") for s in record.steps if s.get("role") == "revision"]
        return next((self.by_name[n] for n in reversed(names) if n in self.by_name), next(iter(self.by_name.values())))

    def question(self, record: Record, principle: Principle, first: str, second: str) -> Conversation:
        return judge_question(self.template, record, principle, first, second)

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        assert teacher is not None
        paired = [i for i, r in enumerate(batch) if r.rejected and not same_text(r.response or "", r.rejected)]
        asks = []
        for i in paired:
            r, principle = batch[i], self.principle_of(batch[i])
            asks.append(self.question(r, principle, r.response, r.rejected))  # chosen first
            asks.append(self.question(r, principle, r.rejected, r.response))  # swapped
        scored = choose(teacher, asks)
        results: list[Record | Drop] = list(batch)
        for k, i in enumerate(paired):
            p_ab, p_ba = scored[2 * k], scored[2 * k + 1]
            p_chosen = first_wins(p_ab, p_ba)
            record, principle = batch[i], self.principle_of(batch[i])
            step = {
                "stage": self.name,
                "role": "verification",
                "principle": principle.name,
                "p_chosen": p_chosen,
                "ab": p_ab,
                "ba": p_ba,
            }
            meta = {**record.meta, "preference": {"confidence": p_chosen, "p_first": p_chosen, "verified": True}}
            checked = replace(record, steps=[*record.steps, step], meta=meta)
            if p_chosen < 0.5 + self.config.margin and self.config.on_reject == "drop":
                results[i] = self.drop(
                    checked, f"judge does not prefer the revision (P = {p_chosen:.3f} < {0.5 + self.config.margin:g})"
                )
            else:
                results[i] = checked
        return results

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        principle = next(iter(self.by_name.values()))
        chosen, rejected = PLACEHOLDER.format("revision"), PLACEHOLDER.format("first answer")
        return [("verification", self.question(record, principle, chosen, rejected))]
