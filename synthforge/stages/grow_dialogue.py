"""Grow each conversation by new turns: the teacher plays the user (a template, an optional persona or goal —
a red-teamer who escalates, a curious learner) and writes the next user turn, the assistant answers it in context,
and, with ``critique:``, that answer is critiqued and revised against a constitution before the next turn, so
harmlessness data can be multi-turn end to end.

``turns: N`` stands for N stages, one per new turn (``NAME.1`` … ``NAME.N``), so each turn is checkpointed on its
own and a killed run resumes mid-dialogue without repeating a finished turn. Every request is seeded from
(pipeline seed, stage, record, role). A simulated user that writes a stop phrase (or nothing) ends that
conversation: it passes the later turns unchanged, and the trace says where and why it ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from synthforge.annotations import DIALOGUE_END
from synthforge.records import Drop, Record, with_reasoning
from synthforge.settings import SpecError
from synthforge.stages.base import PLACEHOLDER, Stage, empty_answer
from synthforge.stages.critique_revise import CritiqueRevise
from synthforge.teachers.base import Conversation, SamplingParams, Teacher
from synthforge.trace import RESPONSE_STEP, USER_TURN_STEP

_LABELS = ("user:", "human:")


@dataclass
class GrowDialogueConfig:
    """``turns``: new user turns (one stage each); ``turn``: which one a stage adds (set by the expansion);
    ``persona``: who the simulated user is, unless the record's ``meta[persona_field]`` says; ``stop``: phrases
    that end the conversation; ``critique``: settings of a ``critique_revise`` applied to each new answer."""

    turns: int = 2
    turn: int = 1
    user_template: str = "simulate-user"
    template: str = "respond"
    persona: str | None = None
    persona_field: str = "persona"
    stop: tuple[str, ...] = ("[END]",)
    critique: dict[str, Any] | None = None
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.7, max_new_tokens=256))
    user_sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=0.9, top_p=0.95, max_new_tokens=96)
    )

    def __post_init__(self) -> None:
        if self.turns < 1 or not 1 <= self.turn <= self.turns:
            raise ValueError("turns must be >= 1")
        if not self.stop or not all(s.strip() for s in self.stop):
            raise ValueError("stop needs at least one non-empty phrase")


class GrowDialogue(Stage):
    """Reads ``prompt`` and ``response``; writes a longer conversation: the old answer joins the history, the new
    user turn is the ``prompt``, its answer the ``response`` (and its first version ``rejected`` after a critique)."""

    kind = "grow_dialogue"
    traces = (USER_TURN_STEP, RESPONSE_STEP, *CritiqueRevise.traces)  # with a critic per turn, its steps too
    annotates = (DIALOGUE_END, *CritiqueRevise.annotates)  # with a critic per turn, its annotations too
    Config = GrowDialogueConfig
    reads = ("prompt", "response")
    writes = ("prompt", "response", "rejected")
    tags = ("multi-turn",)

    @classmethod
    def expand(cls, name: str, settings: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """One stage per new turn, ``NAME.1`` … ``NAME.N``: each checkpointed on its own."""
        turns = settings.get("turns", GrowDialogueConfig.turns)
        if isinstance(turns, bool) or not isinstance(turns, int) or turns < 1:
            raise SpecError(f"stages.{name}.turns: expected an integer >= 1, got {turns!r}")
        if "turn" in settings:
            raise SpecError(f"stages.{name}.turn: set by synthforge (one stage per turn); give 'turns' instead")
        return [(f"{name}.{k}", {**settings, "turn": k}) for k in range(1, turns + 1)]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.user_template = self.use_template("user", self.config.user_template)
        self.template = self.use_template("respond", self.config.template)
        self.critic: CritiqueRevise | None = None
        if self.config.critique is not None:
            self.critic = CritiqueRevise(self.name, self.config.critique, self.resources, f"{self.where}.critique")
            self.templates.update({f"critique.{k}": t for k, t in self.critic.templates.items()})
            self.constitution = self.critic.constitution
            self.metric_groups = CritiqueRevise.metric_groups  # its critique and revision steps are counted here

    def tally(self, step: dict, metrics: Any) -> None:
        if self.critic is not None:
            self.critic.tally(step, metrics)

    def persona(self, record: Record) -> str:
        value = record.meta.get(self.config.persona_field)
        return value if isinstance(value, str) and value.strip() else (self.config.persona or "")

    def simulator_request(self, record: Record) -> Conversation:
        """The teacher, playing the user: the conversation so far (the last answer included), write the next turn."""
        so_far = [*record.dialogue, {"role": "assistant", "content": record.response or ""}]
        text = self.user_template.render(
            conversation=so_far,
            persona=self.persona(record),
            turn=self.config.turn,
            turns=self.config.turns,
            stop=self.config.stop[0],
        )
        return [{"role": "user", "content": text}]

    def ended(self, text: str) -> str | None:
        """Why a simulated user turn ends the conversation (a stop phrase, or nothing said); None if it goes on."""
        if not text:
            return "the simulated user wrote nothing"
        said = next((s for s in self.config.stop if s.lower() in text.lower()), None)
        return f"the simulated user ended it ({said!r})" if said else None

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        assert teacher is not None
        results: list[Record | Drop] = list(batch)
        going = [i for i, r in enumerate(batch) if DIALOGUE_END.of(r) is None]
        if not going:
            return results
        asked = teacher.generate(
            [self.simulator_request(batch[i]) for i in going],
            [self.seeded(self.config.user_sampling, batch[i], "user") for i in going],
        )
        grown: list[int] = []
        for i, (completion, *_) in zip(going, asked, strict=True):
            record, text = batch[i], _clean(completion.text)
            step = USER_TURN_STEP.answer(self.name, completion, turn=self.config.turn)
            reason = self.ended(text)
            if reason is not None:
                end = {"turn": self.config.turn, "reason": reason}
                ended = {**step, "ended": reason}
                results[i] = DIALOGUE_END.on(replace(record, steps=[*record.steps, ended]), end)
                continue
            history = [*record.dialogue, {"role": "assistant", "content": record.response or ""}]
            steps = [
                *record.steps,
                {**step, "text": text, "raw_text": completion.text} if text != completion.text else step,
            ]
            results[i] = with_reasoning(
                replace(record, history=history, prompt=text, response=None, rejected=None, steps=steps)
            )
            grown.append(i)
        self._answer([results[i] for i in grown], grown, results, teacher)
        return results

    def _answer(self, records: list[Any], where: list[int], results: list[Record | Drop], teacher: Teacher) -> None:
        """Answer the new user turns in context (then critique and revise them, with ``critique:``)."""
        if not records:
            return
        answers = teacher.generate(
            [self.answer_request(r, self.template) for r in records],
            [self.seeded(self.config.sampling, r, "answer") for r in records],
        )
        answered: list[Record | Drop] = []
        for record, (completion, *_) in zip(records, answers, strict=True):
            step = RESPONSE_STEP.answer(self.name, completion, turn=self.config.turn, writes=["response"])
            updated = replace(record, response=completion.text, steps=[*record.steps, step])
            updated = with_reasoning(updated, (completion.text, completion.reasoning))
            answered.append(updated if completion.text else self.drop(updated, empty_answer(completion)))
        if self.critic is not None:
            todo = [k for k, r in enumerate(answered) if isinstance(r, Record)]
            revised = self.critic.process([answered[k] for k in todo], teacher)  # type: ignore[misc]
            for k, result in zip(todo, revised, strict=True):
                answered[k] = result
        for i, result in zip(where, answered, strict=True):
            results[i] = result

    def most_upstream_texts(self) -> dict[str, int]:
        grown = 2 * (self.config.turns - 1)  # the last turn's requests carry every earlier user turn and answer
        critic = {role: grown for role in ("critique", "revision")} if self.critic is not None else {}
        return {"user turn": grown, "response": grown, **critic}

    def most_calls(self, records: int, candidates: int) -> dict[str, int]:
        turns = records * self.config.turns
        critic = self.critic.most_calls(turns, candidates) if self.critic is not None else {}
        return {"user turn": turns, "response": turns, **critic}

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        sample = replace(record, response=record.response or PLACEHOLDER.format("response"))
        answered = [*sample.dialogue, {"role": "assistant", "content": sample.response or ""}]
        nxt = replace(sample, history=answered, prompt=PLACEHOLDER.format("next user turn"))
        shown = [("user turn", self.simulator_request(sample)), ("response", self.answer_request(nxt, self.template))]
        if self.critic is not None:
            shown += self.critic.preview(replace(nxt, response=PLACEHOLDER.format("response")))
        return shown


def _clean(text: str) -> str:
    """A simulated user turn without a "User:" label or quotes around it."""
    text = text.strip()
    if text.lower().startswith(_LABELS):
        text = text.split(":", 1)[1].strip()
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text
