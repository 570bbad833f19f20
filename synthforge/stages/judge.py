"""AI-feedback judge (RL-CAI): sample two responses, ask the teacher which is better, read its log-probabilities.

For each of ``principles`` compare questions drawn from the constitution, the two responses are shown as
"(A) … (B) …" in both orders; the probability of each option is the softmax of the teacher's
log-probabilities of replying "(A)" or "(B)". Orders and principles are averaged into one soft label.
With chain of thought the judge reasons first and each probability is clamped to [0.4, 0.6], as in the paper.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from synthforge.annotations import PREFERENCE, Preference
from synthforge.constitution import Principle
from synthforge.records import Drop, Record, same_text, with_reasoning
from synthforge.settings import SpecError
from synthforge.stages.base import PLACEHOLDER, Stage
from synthforge.stages.helpers.judging import (
    Juried,
    JuryVerdict,
    Pair,
    SwapChecks,
    Verdict,
    first_wins,
    judge_notes,
    judge_question,
    jury_pairs,
    measured_note,
    swap_agrees,
    tally_jury,
    tally_verdict,
)
from synthforge.stages.helpers.metrics import GroupSpec, Metrics
from synthforge.teachers.base import CHOICE, Conversation, SamplingParams, Teacher
from synthforge.trace import JUDGEMENT_STEP, SAMPLE_STEP


@dataclass
class JudgeConfig(SwapChecks):
    """Settings of the judge stage (and :class:`SwapChecks`': disagreement, max_flip_rate, min_judged,
    on_unreliable)."""

    constitution: str = "harmless"
    respond_template: str = "respond"
    template: str = "judge"
    answer_template: str = "judge-answer"
    principles: int = 1
    swap: bool = True  # ask in both orders; false: labels are marked unverified for position
    chain_of_thought: bool = False
    margin: float = 0.05
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=1.0, max_new_tokens=256))
    cot_sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0, max_new_tokens=160))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.principles < 1:
            raise ValueError("principles must be >= 1")
        if not 0 <= self.margin < 0.5:
            raise ValueError("margin must be in [0, 0.5)")


class Judge(Juried, Stage):
    """Reads ``prompt``; writes the preferred sample as ``response``, the other as ``rejected``, and the label."""

    kind = "judge"
    traces = (SAMPLE_STEP, JUDGEMENT_STEP)
    annotates = (PREFERENCE,)
    tags = ("constitutional-ai", "rlaif")
    Config = JudgeConfig
    reads = ("prompt",)
    writes = ("response", "rejected")
    needs = frozenset({CHOICE})
    metric_groups = {
        "principle": GroupSpec(
            counts=("judged_swapped",),
            rates={"swap_agreement": ("swap_agreed", "judged_swapped")},
            labels={"judged_swapped": "judged", "swap_agreement": "swap agreement"},
        )
    }

    def tally(self, step: dict, metrics: Metrics) -> None:
        """Per principle: judgements asked in both orders, and how often the two orders agreed; per stage: the
        flip, first-position and longer-answer rates."""
        if JUDGEMENT_STEP.is_(step):
            for name, agreed in (step.get("swap_agreement") or {}).items():
                metrics.add("principle", name, judged_swapped=1, swap_agreed=bool(agreed))
            tally_verdict(step, metrics)
            tally_jury(step, metrics)

    def notes(self, summary: dict) -> list[str]:
        notes = judge_notes(summary.get("counters", {}), self.config, "pairs")
        measured = self.measured()
        if measured is not None:
            notes.append(measured_note(measured))
        if not self.config.swap:
            notes.append("labels are unverified for position: the judge was asked in one order only (swap: false)")
        elif self.config.disagreement == "average":
            notes.append("labels are not swap-checked: orders that disagree were averaged (disagreement: average)")
        return notes

    def halt(self, summary: dict) -> str | None:
        return self.config.halt(summary.get("counters", {}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        constitution = self.use_constitution(self.config.constitution)
        missing = [p.name for p in constitution.principles if not p.compare]
        if missing:
            raise SpecError(
                f"{self.where}.constitution: principles without a 'compare:' question can't judge: {', '.join(missing)}"
            )
        self.respond_template = self.use_template("respond", self.config.respond_template)
        self.template = self.use_template("judge", self.config.template)
        self.measured()  # a judge_report that isn't one fails validation
        self.answer_template = self.use_template("judge_answer", self.config.answer_template)

    def question(self, record: Record, principle: Principle, first: str, second: str) -> Conversation:
        return judge_question(self.template, record, principle, first, second, self.config.chain_of_thought)

    def _principles(self, record: Record) -> list[Principle]:
        assert self.constitution is not None
        return self.constitution.sample(random.Random(self.seed_for(record, "principles")), self.config.principles)

    def teacher_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([self.teacher_name, *self.config.judges]))  # it samples with its own

    def judged(self, batch: list[Record], teacher: Teacher, judges: dict[str, Teacher]) -> list[Record | Drop]:
        """Two samples per record from ``teacher``, judged by each of ``judges`` (one, or a jury)."""
        sampling = replace(self.config.sampling, n=2)
        convs = [self.answer_request(r, self.respond_template) for r in batch]
        samples = teacher.generate(convs, [self.seeded(sampling, r) for r in batch])
        pairs = [Pair(r, s[0].text, s[1].text, tuple(self._principles(r))) for r, s in zip(batch, samples, strict=True)]
        cot = self.config.chain_of_thought
        reason_for = (lambda judge: lambda asks: self._reason(batch, asks, judge)) if cot else None
        judged = jury_pairs(judges, self.template, pairs, self.config, self.config.swap, cot, reason_for)
        return [self._label(r, samples[i], *judged[i]) for i, r in enumerate(batch)]

    def _reason(self, batch, asks, teacher) -> list[Conversation]:
        """With chain of thought, the judge's reasoning and the answer request, appended to each question."""
        params = [self.seeded(self.config.cot_sampling, batch[i], name, swapped) for i, name, swapped, _ in asks]
        thoughts = teacher.generate([q[3] for q in asks], params)
        answer = self.answer_template.render()
        return [[{"role": "assistant", "content": t[0].text}, {"role": "user", "content": answer}] for t in thoughts]

    def _label(self, record: Record, pair, verdict: Verdict, jury: JuryVerdict | None = None) -> Record | Drop:
        first, second = pair[0], pair[1]
        ba = verdict.ba or {}
        per_principle = {name: first_wins(p, ba.get(name)) for name, p in verdict.ab.items()}
        p_first = verdict.p_first
        steps = [
            *record.steps,
            SAMPLE_STEP.answer(self.name, first, index=0, writes=["response", "rejected"]),
            SAMPLE_STEP.answer(self.name, second, index=1, writes=["response", "rejected"]),
        ]
        steps.append(
            JUDGEMENT_STEP.make(
                self.name,
                p_first=p_first,
                per_principle=per_principle,
                orders={n: {"ab": p, "ba": ba.get(n)} for n, p in verdict.ab.items()},
                swap_agreement={n: swap_agrees(p, ba[n]) for n, p in verdict.ab.items() if n in ba},
                **verdict.summary(),
                **({"teacher": None, **jury.summary(), "jury": self.config.jury} if jury is not None else {}),
            )
        )
        chosen, rejected = (first, second) if p_first >= 0.5 else (second, first)
        confidence = max(p_first, 1.0 - p_first)
        preference = Preference(confidence, p_first, position_checked=verdict.swapped)
        labelled = replace(PREFERENCE.on(record, preference), response=chosen.text, rejected=rejected.text, steps=steps)
        labelled = with_reasoning(labelled, (first.text, first.reasoning), (second.text, second.reasoning))
        if same_text(first.text, second.text):
            return self.drop(labelled, "identical samples: no preference to learn")
        if jury is not None and not jury.unanimous and self.config.jury_split != "keep":
            what = "dropped" if self.config.jury_split == "drop" else "a tie"
            return self.drop(labelled, f"jury split ({', '.join(f'{n}: {v}' for n, v in jury.votes.items())}): {what}")
        if verdict.winner(self.config.disagreement) == "tie":
            return self.drop(labelled, self._tie_reason(verdict))
        if confidence - 0.5 < self.config.margin:
            return self.drop(labelled, f"judge margin below {self.config.margin} ({confidence - 0.5:.3f})")
        return labelled

    def _tie_reason(self, verdict: Verdict) -> str:
        a, b = verdict.first_when_a, verdict.first_when_b
        what = "dropped" if self.config.disagreement == "drop" else "a tie"
        if b is None or not verdict.flipped:
            return f"judge undecided (P(first) {a:.3f}{'' if b is None else f' / {b:.3f}'}): {what}"
        return f"judge's two orders disagree (P(first) {a:.3f} shown first, {b:.3f} shown second): {what}"

    def most_calls(self, records: int, candidates: int) -> dict[str, int]:
        judged = records * self.config.principles * (2 if self.config.swap else 1) * max(1, len(self.config.judges))
        return {"samples": records * 2, "judgement": judged, "answer": judged if self.config.chain_of_thought else 0}

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        principle = self._principles(record)[0]
        first, second = PLACEHOLDER.format("sample 1"), PLACEHOLDER.format("sample 2")
        convs = [
            ("samples", self.answer_request(record, self.respond_template)),
            ("judgement", self.question(record, principle, first, second)),
        ]
        if self.config.chain_of_thought:
            convs.append(("answer", [{"role": "user", "content": self.answer_template.render()}]))
        return convs
