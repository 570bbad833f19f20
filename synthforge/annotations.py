"""What stages leave on a record beside its conversation: typed, declared annotations (``Record.meta``).

Each annotation is declared once here: its key, its type and what it means. A stage writes one with
``ANNOTATION.on(record, value)`` and lists it in its ``annotates``; a reader gets the typed value with
``ANNOTATION.of(record)``. No module reads or writes ``meta`` by a string key of its own (a test checks), so a
reader never guesses what a writer meant. The serialised form (``Record.to_dict``'s ``meta``) is unchanged: a
structured annotation is a plain mapping there, in the same key order as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from synthforge.records import Record

T = TypeVar("T")


@dataclass(frozen=True)
class Annotation(Generic[T]):
    """One declared annotation: its ``key`` in ``Record.meta``, what it means, and how its value is stored (a
    structured value is a dataclass with ``to_dict``/``from_dict``; plain JSON values are stored as they are)."""

    key: str
    doc: str
    load: Callable[[Any], T] = lambda data: data  # noqa: E731 - stored data -> value
    dump: Callable[[T], Any] = lambda value: value  # noqa: E731 - value -> stored data

    def of(self, record: Record) -> T | None:
        """The annotation's value on ``record`` (None when no stage wrote it)."""
        data = record.meta.get(self.key)
        return None if data is None else self.load(data)

    def on(self, record: Record, value: T) -> Record:
        """``record`` with this annotation set to ``value``."""
        return replace(record, meta={**record.meta, self.key: self.dump(value)})

    def set_on(self, meta: dict[str, Any], value: T) -> None:
        """Set it in a ``meta`` mapping being built (a new record's)."""
        meta[self.key] = self.dump(value)


@dataclass(frozen=True)
class Preference:
    """A judge's preference label: P(chosen better) as ``confidence``, P(first sample better) as ``p_first``."""

    confidence: float
    p_first: float
    position_checked: bool  # asked in both orders
    verified: bool = False  # verify_pairs checked an SL-CAI pair
    tie: bool = False  # undecided: no DPO pair (the revision may stay an SFT row)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"confidence": self.confidence, "p_first": self.p_first}
        if self.verified:
            data["verified"] = True
        data["position_checked"] = self.position_checked
        if self.tie:
            data["tie"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preference:
        return cls(
            confidence=float(data.get("confidence", 0.0)),
            p_first=float(data.get("p_first", data.get("confidence", 0.0))),
            position_checked=bool(data.get("position_checked", False)),
            verified=bool(data.get("verified", False)),
            tie=bool(data.get("tie", False)),
        )


@dataclass(frozen=True)
class RewardGap:
    """A reward model's scores of the chosen and the rejected answer, and their gap."""

    chosen: float
    rejected: float
    margin: float

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "rejected": self.rejected, "margin": self.margin}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RewardGap:
        return cls(float(data["chosen"]), float(data["rejected"]), float(data["margin"]))


@dataclass(frozen=True)
class ScorePair:
    """A pair made from rubric scores: both answers' mean scores, their gap, and who wrote each."""

    chosen_score: float
    rejected_score: float
    margin: float
    chosen_teacher: str
    rejected_teacher: str
    chosen_member: str
    rejected_member: str

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScorePair:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def _structured(cls: Any) -> dict[str, Callable[[Any], Any]]:
    return {"load": cls.from_dict, "dump": lambda value: value.to_dict()}


# -- the annotations, by what writes them -------------------------------------------------------------------------
SOURCE: Annotation[str] = Annotation("source", "the seed file a record came from (seeds)")
HARMFUL: Annotation[bool] = Annotation("harmful", "whether the seed prompt is harmful (seeds.harmful_field)")
PERSONA: Annotation[str] = Annotation("persona", "who the simulated user is (a seed's persona column)")
ORIGIN: Annotation[str] = Annotation("origin", "the stage that wrote the prompt (magpie, self_instruct)")
PRE_QUERY_SHA256: Annotation[str] = Annotation("pre_query_sha256", "hash of Magpie's pre-query template text")
ROUND: Annotation[int] = Annotation("round", "the Self-Instruct round that added the prompt")
ROUGE_L_MAX: Annotation[float] = Annotation("rouge_l_max", "the prompt's highest ROUGE-L against the pool")
NEAREST: Annotation[str] = Annotation("nearest", "the pool instruction most like the prompt (Self-Instruct)")
EVOLVED_FROM: Annotation[str] = Annotation("evolved_from", "the prompt before Evol-Instruct rewrote it")
EVOLUTIONS: Annotation[list] = Annotation("evolutions", "the Evol-Instruct operations kept, in order")
UNCHANGED: Annotation[bool] = Annotation("unchanged", "critique_revise's final answer equals the first one")
DIALOGUE_END: Annotation[str] = Annotation("dialogue_end", "why the simulated user ended the dialogue")
PREFERENCE: Annotation[Preference] = Annotation(
    "preference", "a judge's preference label (judge, verify_pairs)", **_structured(Preference)
)
REWARD: Annotation[RewardGap] = Annotation(
    "reward", "a reward model's chosen/rejected scores (reward_rank)", **_structured(RewardGap)
)
REWARD_SCORE: Annotation[float] = Annotation("reward_score", "a reward model's score of the response (reward_score)")
RATING: Annotation[ScorePair] = Annotation(
    "rating", "a pair made from rubric scores (pair_by_score)", **_structured(ScorePair)
)
ANSWERS: Annotation[dict] = Annotation("answers", "each compared model's answer, by label (answer)")
COMPARISONS: Annotation[list] = Annotation("comparisons", "the judge's verdict per pair of models (compare_judge)")
REFUSALS: Annotation[dict] = Annotation("refusals", "whether each model's answer refuses, by label (compare_judge)")

ANNOTATIONS: dict[str, Annotation[Any]] = {
    a.key: a
    for a in (
        SOURCE,
        HARMFUL,
        PERSONA,
        ORIGIN,
        PRE_QUERY_SHA256,
        ROUND,
        ROUGE_L_MAX,
        NEAREST,
        EVOLVED_FROM,
        EVOLUTIONS,
        UNCHANGED,
        DIALOGUE_END,
        PREFERENCE,
        REWARD,
        REWARD_SCORE,
        RATING,
        ANSWERS,
        COMPARISONS,
        REFUSALS,
    )
}
