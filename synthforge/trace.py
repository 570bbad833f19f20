"""What stages leave in a record's trace (``Record.steps``): typed, declared steps.

Each kind of step is declared once here: its ``role`` (the key that names it on disk), a TypedDict of its
fields, and what it means. A stage writes a step with ``KIND_STEP.make(stage, **fields)`` (a teacher's answer:
``KIND_STEP.answer(stage, completion, **fields)``), lists the kinds it writes in ``Stage.traces``, and the engine
stops a run whose stage writes a step it did not declare or a field its kind lacks. Readers find steps with
``KIND_STEP.is_(step)``, ``.in_(steps)`` and ``.last(steps)``, typed as the kind's TypedDict; no module
compares a step's role with a string of its own (a test checks).

The JSON on disk is unchanged: a step is the same mapping, in the same key order, as before these types.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypedDict, TypeVar

S = TypeVar("S", bound=Mapping[str, Any])


class Step(TypedDict, total=False):
    """What every step has: the stage that wrote it, its kind, and the named teacher it called (``default``
    for the pipeline's ``teacher:``; None where several were asked, as a jury's)."""

    stage: str
    role: str
    teacher: str | None


class AnswerStep(Step, total=False):
    """A teacher's answer: its text, why it stopped, its tokens, its thinking (a reasoning teacher's), the
    record fields the text became (``writes``) and, when the stage cleaned the text, the text as written."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    reasoning: str
    writes: list[str]
    raw_text: str


class VerdictFields(TypedDict, total=False):
    """What a judge's verdict keeps (``Verdict.summary``): P(first) in each order, whether they agree."""

    p_first_ab: float
    p_first_ba: float | None
    consistent: bool | None
    position_checked: bool
    first_longer: bool | None


class JuryFields(TypedDict, total=False):
    """What a jury's verdict keeps (``JuryVerdict.summary``): its judges, each one's vote and orders."""

    judges: list[str]
    votes: dict[str, str]
    unanimous: bool
    by_judge: dict[str, dict[str, Any]]
    jury: str


class ResponseStep(AnswerStep, total=False):
    turn: int  # grow_dialogue: the turn answered


class TruncatedStep(Step, total=False):
    dropped_turns: int
    kept_turns: int


class SampleStep(AnswerStep, total=False):
    index: int


class JudgementStep(Step, VerdictFields, JuryFields, total=False):
    p_first: float
    per_principle: dict[str, float]
    orders: dict[str, dict[str, float | None]]
    swap_agreement: dict[str, bool]


class VerificationStep(Step, VerdictFields, JuryFields, total=False):
    principle: str
    p_chosen: float
    ab: float
    ba: float
    outcome: str  # kept | rejected | undecided | dropped


class ComparisonStep(Step, total=False):
    a: str
    b: str
    principle: str
    p_a: float
    ab: float
    ba: float
    judges: list[str]
    votes: dict[str, str]


class CritiqueStep(AnswerStep, total=False):
    round: int
    principle: str
    asks_change: bool
    context_turns: int


class RevisionStep(AnswerStep, total=False):
    round: int
    principle: str
    changed: bool
    edit_fraction: float
    context_turns: int


class EvolutionStep(AnswerStep, total=False):
    round: int
    operation: str
    eliminated: str | None


class GenerationStep(AnswerStep, total=False):
    round: int
    request: int
    examples: list[str]


class QueryStep(AnswerStep, total=False):
    index: int


class UserTurnStep(AnswerStep, total=False):
    turn: int
    ended: str


class LabelledAnswerStep(AnswerStep, total=False):
    model: str  # the answer stage's label of the model


class CandidateStep(AnswerStep, total=False):
    member: str


class RatingStep(AnswerStep, total=False):
    aspect: str
    score: float | None
    method: str  # json | logprobs | text
    candidate: int
    member: str | None
    teacher_of_answer: str | None
    rationale: str | None
    probabilities: dict[str, float]


class PairingStep(Step, total=False):
    chosen: dict[str, Any]
    rejected: dict[str, Any]
    chosen_member: str | None
    margin: float


class RewardStep(Step, total=False):
    scores: list[float]
    best: int
    worst: int


class DedupStep(Step, total=False):
    duplicate_of: str
    cluster_size: int


class FieldStep(AnswerStep, total=False):
    attempt: int
    invalid: str


@dataclass(frozen=True)
class StepKind(Generic[S]):
    """One declared kind of step: its ``role`` on disk, its fields (a TypedDict) and what it means. A kind whose
    role is chosen by the stage's settings (``generate``'s field name) has ``role`` None."""

    role: str | None
    fields: type[S]
    doc: str
    allowed: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", frozenset(typing.get_type_hints(self.fields)))

    def make(self, stage: str, role: str | None = None, **fields: Any) -> S:
        """A new step of this kind written by ``stage`` (``role``: only for a kind whose stage names it)."""
        unknown = [k for k in fields if k not in self.allowed]
        if unknown:
            raise TypeError(f"a {self.role or role} step has no field {unknown[0]!r} ({self.fields.__name__})")
        if (role is None) == (self.role is None):
            raise TypeError(f"a {self.fields.__name__} step's role is {self.role!r}: don't name another")
        return typing.cast(S, {"stage": stage, "role": self.role or role, **fields})

    def answer(self, stage: str, completion: Any, role: str | None = None, **fields: Any) -> S:
        """A step for one teacher completion: its text, finish reason, tokens and thinking, then ``fields``."""
        made = {
            "text": completion.text,
            "finish_reason": completion.finish_reason,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            **({"reasoning": completion.reasoning} if completion.reasoning is not None else {}),
        }
        return self.make(stage, role, **made, **fields)

    def is_(self, step: Mapping[str, Any]) -> bool:
        """Whether ``step`` is of this kind."""
        return self.role is not None and step.get("role") == self.role

    def in_(self, steps: Iterable[Mapping[str, Any]]) -> list[S]:
        """The steps of this kind, in order."""
        return [typing.cast(S, s) for s in steps if self.is_(s)]

    def last(self, steps: Iterable[Mapping[str, Any]]) -> S | None:
        """The latest step of this kind, or None."""
        found = self.in_(steps)
        return found[-1] if found else None


RESPONSE_STEP = StepKind("response", ResponseStep, "the teacher's answer to the conversation (respond, grow_dialogue)")
TRUNCATED_STEP = StepKind("truncated", TruncatedStep, "the oldest turns dropped to fit the context window (respond)")
SAMPLE_STEP = StepKind("sample", SampleStep, "one of several sampled answers to be ranked (judge, reward_rank)")
JUDGEMENT_STEP = StepKind("judgement", JudgementStep, "a judge's verdict between two samples, both orders (judge)")
VERIFICATION_STEP = StepKind(
    "verification", VerificationStep, "a judge asked whether a revision beats the original (verify_pairs)"
)
COMPARISON_STEP = StepKind("comparison", ComparisonStep, "a judge comparing two models' answers (compare_judge)")
CRITIQUE_STEP = StepKind("critique", CritiqueStep, "a critique of the answer against one principle (critique_revise)")
REVISION_STEP = StepKind("revision", RevisionStep, "the answer rewritten after a critique (critique_revise)")
EVOLUTION_STEP = StepKind(
    "evolution", EvolutionStep, "an instruction rewritten, and whether it survived (evol_instruct)"
)
GENERATION_STEP = StepKind("generation", GenerationStep, "one request for new tasks (self_instruct)")
QUERY_STEP = StepKind("query", QueryStep, "a user query the teacher wrote from its template alone (magpie)")
USER_TURN_STEP = StepKind("user_turn", UserTurnStep, "the user's next turn, written by the teacher (grow_dialogue)")
ANSWER_STEP = StepKind("answer", LabelledAnswerStep, "a named model's answer to compare (answer)")
CANDIDATE_STEP = StepKind("candidate", CandidateStep, "one pool member's answer (pool)")
RATING_STEP = StepKind("rating", RatingStep, "one candidate's score on one aspect of a rubric (rate)")
PAIRING_STEP = StepKind("pairing", PairingStep, "the best and worst rated candidates made a pair (pair_by_score)")
REWARD_STEP = StepKind("reward", RewardStep, "a reward model's scores of the samples (reward_rank)")
DEDUP_STEP = StepKind("dedup", DedupStep, "a near-duplicate dropped, and the record kept instead (minhash_dedup)")
FIELD_STEP = StepKind(None, FieldStep, "a column the teacher wrote, its role the column's name (generate)")

KINDS: tuple[StepKind, ...] = (
    RESPONSE_STEP,
    TRUNCATED_STEP,
    SAMPLE_STEP,
    JUDGEMENT_STEP,
    VERIFICATION_STEP,
    COMPARISON_STEP,
    CRITIQUE_STEP,
    REVISION_STEP,
    EVOLUTION_STEP,
    GENERATION_STEP,
    QUERY_STEP,
    USER_TURN_STEP,
    ANSWER_STEP,
    CANDIDATE_STEP,
    RATING_STEP,
    PAIRING_STEP,
    REWARD_STEP,
    DEDUP_STEP,
    FIELD_STEP,
)
ROLES = frozenset(k.role for k in KINDS if k.role is not None)
