"""Evol-Instruct (WizardLM, Xu et al., 2023): rewrite each instruction for ``rounds`` rounds by a seeded
random operation, in depth (constraints, deepen, concretize, reasoning, complicate_input) or in breadth.

A failed evolution is eliminated by the paper's rules and the previous instruction is kept for the next
round: no information gain over the original, an apology instead of a prompt, only punctuation and stop
words, or the rewriting prompt's own wording copied. A record whose every evolution failed is dropped.

With a teacher that can constrain its output (``structured: auto``, or ``json``) the rewritten prompt is asked
for as ``{"prompt": ...}`` under that schema and read from the JSON, instead of cleaned of preambles.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field, replace

from synthforge.annotations import EVOLUTIONS, EVOLVED_FROM
from synthforge.dedup.rouge import lcs_length, rouge_l_f1, rouge_tokens
from synthforge.records import Drop, Record, same_text, with_reasoning
from synthforge.schemas import parse_json
from synthforge.stages.base import PLACEHOLDER, Stage
from synthforge.stages.filters.refusal import DEFAULT_PHRASES, is_refusal_only
from synthforge.stages.helpers.revision_text import clean_revision
from synthforge.teachers.base import Conversation, SamplingParams, Teacher
from synthforge.trace import EVOLUTION_STEP

DEPTH = ("constraints", "deepen", "concretize", "reasoning", "complicate_input")
OPERATIONS = (*DEPTH, "breadth")
TEMPLATE_WORDING = ("given prompt", "rewritten prompt", "#rewritten", "#given", "new prompt", "prompt rewriter")
STOP_WORDS = frozenset(
    {
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "about",
        "as",
        "into",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "this",
        "that",
        "these",
        "those",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "me",
        "my",
        "your",
        "our",
        "what",
        "which",
        "who",
        "whom",
        "how",
        "why",
        "when",
        "where",
        "please",
    }
)
_SORRY = re.compile(r"\b(sorry|apologi[sz]e)\b", re.IGNORECASE)


PROMPT_SCHEMA = {
    "type": "object",
    "properties": {"prompt": {"type": "string", "minLength": 1}},
    "required": ["prompt"],
    "additionalProperties": False,
}


@dataclass
class EvolInstructConfig:
    """``operations`` to draw from (uniformly, seeded per record and round); ``rounds`` evolutions each."""

    rounds: int = 1
    operations: tuple[str, ...] = OPERATIONS
    depth_template: str = "evol-depth"
    breadth_template: str = "evol-breadth"
    max_apology_words: int = 80
    min_gain: float = 0.9
    min_words: int = 3
    structured: str = "auto"  # json: {"prompt": ...} under a schema; text: the bare reply; auto: json if it can
    sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=256)
    )

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError("rounds must be >= 1")
        unknown = [op for op in self.operations if op not in OPERATIONS]
        if unknown or not self.operations:
            raise ValueError(f"operations must be a non-empty list of: {', '.join(OPERATIONS)}")


def elimination_reason(
    original: str,
    evolved: str,
    max_apology_words: int = 80,
    min_gain: float = 0.9,
    operation: str = "breadth",
    min_words: int = 3,
) -> str | None:
    """Why an evolution fails the paper's elimination rules, or None when it is kept.

    Two checks are ours, for small teachers: fewer than ``min_words`` words, and an in-depth evolution
    that came out shorter than the prompt it should have made harder.
    """
    if not evolved.strip():
        return "empty evolution"
    if len(evolved.split()) < min_words:
        return f"too short to be a prompt (< {min_words} words)"
    lowered = evolved.lower()
    if any(phrase in lowered for phrase in TEMPLATE_WORDING):
        return "copies the rewriting prompt's wording"
    words = rouge_tokens(evolved)
    if not words or all(w in STOP_WORDS for w in words):
        return "only punctuation and stop words"
    short = len(evolved.split()) < max_apology_words
    if short and (_SORRY.search(evolved) or is_refusal_only(evolved, DEFAULT_PHRASES, max_apology_words)):
        return "an apology instead of a prompt"
    before = rouge_tokens(original)
    score = rouge_l_f1(lcs_length(before, words), len(before), len(words))
    if same_text(original, evolved) or (score >= min_gain and len(words) <= len(before)):
        return f"no information gain over the original (ROUGE-L {score:.2f})"
    if operation != "breadth" and len(words) < len(before):
        return f"in-depth evolution shorter than the original ({len(words)} < {len(before)} words)"
    return None


class EvolInstruct(Stage):
    """Reads ``prompt``; writes the evolved ``prompt`` (the original is kept in ``meta.evolved_from``)."""

    kind = "evol_instruct"
    traces = (EVOLUTION_STEP,)
    annotates = (EVOLVED_FROM, EVOLUTIONS)
    tags = ("evol-instruct",)
    Config = EvolInstructConfig
    reads = ("prompt",)
    writes = ("prompt",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.depth = self.use_template("depth", self.config.depth_template)
        self.breadth = self.use_template("breadth", self.config.breadth_template)
        if self.answers_in_json(self.config.structured):
            self.config.sampling = replace(self.config.sampling, json_schema=PROMPT_SCHEMA)

    def operation(self, record: Record, rnd: int) -> str:
        """The operation of round ``rnd`` for ``record`` (seeded: same record, same choice)."""
        return random.Random(self.seed_for(record, "operation", rnd)).choice(self.config.operations)

    def request(self, instruction: str, operation: str) -> Conversation:
        if operation == "breadth":
            text = self.breadth.render(instruction=instruction, structured=bool(self.json_answers))
        else:
            text = self.depth.render(instruction=instruction, operation=operation, structured=bool(self.json_answers))
        return [{"role": "user", "content": text}]

    def process(self, batch: list[Record], teacher: Teacher | None) -> list[Record | Drop]:
        assert teacher is not None
        current = [r.prompt for r in batch]
        steps = [list(r.steps) for r in batch]
        kept = [0] * len(batch)
        last_reason: list[str | None] = [None] * len(batch)
        for rnd in range(self.config.rounds):
            ops = [self.operation(r, rnd) for r in batch]
            done = teacher.generate(
                [self.request(current[i], ops[i]) for i in range(len(batch))],
                [self.seeded(self.config.sampling, r, rnd) for r in batch],
            )
            for i, samples in enumerate(done):
                evolved, problem = self.evolved_text(samples[0].text)
                reason = problem or elimination_reason(
                    current[i],
                    evolved,
                    max_apology_words=self.config.max_apology_words,
                    min_gain=self.config.min_gain,
                    operation=ops[i],
                    min_words=self.config.min_words,
                )
                steps[i].append(
                    {
                        **EVOLUTION_STEP.answer(self.name, samples[0], round=rnd, operation=ops[i]),
                        "text": evolved,
                        "eliminated": reason,
                    }
                )
                if reason is None:
                    current[i], kept[i] = evolved, kept[i] + 1
                last_reason[i] = reason
        return [self._finish(r, current[i], steps[i], kept[i], last_reason[i]) for i, r in enumerate(batch)]

    def evolved_text(self, answer: str) -> tuple[str, str | None]:
        """The rewritten prompt in an answer, and why there is none (a JSON answer that doesn't parse)."""
        if not self.json_answers:
            return clean_revision(answer), None
        value, problem = parse_json(answer)
        if not isinstance(value, dict) or not isinstance(value.get("prompt"), str):
            return answer, f"no rewritten prompt in the JSON answer ({problem or 'no prompt string'})"
        return " ".join(value["prompt"].split()), None

    def _finish(self, record: Record, prompt: str, steps: list[dict], kept: int, reason: str | None) -> Record | Drop:
        annotated = EVOLUTIONS.on(EVOLVED_FROM.on(record, record.prompt), kept)
        evolved = with_reasoning(replace(annotated, prompt=prompt, response=None, rejected=None, steps=steps))
        if kept == 0:
            return self.drop(evolved, f"every evolution eliminated (last: {reason})")
        return evolved

    def most_calls(self, records: int, candidates: int) -> dict[str, int]:
        return {op: records * self.config.rounds for op in ("deepen", "breadth")}  # a round is one of them: loose

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        return [(op, self.request(record.prompt or PLACEHOLDER.format("prompt"), op)) for op in ("deepen", "breadth")]
