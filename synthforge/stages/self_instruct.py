"""Self-Instruct (Wang et al., 2022): grow a pool of instructions from seed tasks with the teacher.

Each round sends several requests, each showing in-context instructions (mostly seeds, some generated)
and asking for the next ones. A candidate joins the pool only if it passes the heuristic filters and
its ROUGE-L F1 against every pool instruction is <= ``rouge_threshold``; every rejected candidate goes
to the drop ledger with its reason. Stops at ``target`` new instructions (or ``max_rounds``).

With a teacher that can constrain its output (``structured: auto``, or ``json``), each request asks for
``{"tasks": [...]}`` under that schema instead of continuing the numbered list, and the tasks are read from
the JSON instead of split from the text (an answer cut off mid-list keeps its complete tasks).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from synthforge.annotations import NEAREST, ORIGIN, ROUGE_L_MAX, ROUND
from synthforge.dedup.rouge import NoveltyIndex, Verdict
from synthforge.records import Drop, Record, make_record_id
from synthforge.schemas import leading_strings, parse_json
from synthforge.stages.base import DatasetStage, Journal
from synthforge.stages.helpers.instruction_rules import BANNED_KEYWORDS, rejection_reason, split_instructions
from synthforge.teachers.base import Completion, Conversation, SamplingParams, Teacher
from synthforge.trace import GENERATION_STEP

TASKS_SCHEMA = {
    "type": "object",
    "properties": {"tasks": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}},
    "required": ["tasks"],
    "additionalProperties": False,
}


@dataclass
class SelfInstructConfig:
    """Pool growth settings; defaults follow the paper (8 in-context tasks, 2 of them generated)."""

    template: str = "self-instruct"
    target: int = 100
    examples: int = 8
    generated_examples: int = 2
    requests_per_round: int = 8
    max_rounds: int = 50
    rouge_threshold: float = 0.7
    min_words: int = 4
    max_words: int = 150
    banned_keywords: tuple[str, ...] = BANNED_KEYWORDS
    keep_seeds: bool = False
    structured: str = "auto"  # json: {"tasks": [...]} under a schema; text: a numbered list; auto: json if it can
    sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=256)
    )

    def __post_init__(self) -> None:
        if self.target < 1 or self.examples < 1 or self.requests_per_round < 1 or self.max_rounds < 1:
            raise ValueError("target, examples, requests_per_round and max_rounds must be >= 1")
        if not 0 <= self.generated_examples <= self.examples:
            raise ValueError("generated_examples must be between 0 and examples")
        if not 0 < self.rouge_threshold <= 1:
            raise ValueError("rouge_threshold must be in (0, 1]")


class SelfInstruct(DatasetStage):
    """Reads seed instructions (``prompt``); writes new instruction records (and the seeds if ``keep_seeds``)."""

    kind = "self_instruct"
    traces = (GENERATION_STEP,)
    annotates = (ORIGIN, ROUND, ROUGE_L_MAX, NEAREST)
    tags = ("self-instruct",)
    Config = SelfInstructConfig
    reads = ("prompt",)
    writes = ("prompt",)
    generates = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.template = self.use_template("self_instruct", self.config.template)
        if self.answers_in_json(self.config.structured):
            self.config.sampling = replace(self.config.sampling, json_schema=TASKS_SCHEMA)

    def progress_total(self, records: list[Record]) -> int:
        return self.config.target

    def request(self, examples: list[str]) -> Conversation:
        """The user message asking for the task after ``examples``."""
        text = self.template.render(
            examples=examples, next_number=len(examples) + 1, structured=bool(self.json_answers)
        )
        return [{"role": "user", "content": text}]

    def most_calls(self, records: int, candidates: int) -> dict[str, int]:
        return {"request": self.config.max_rounds * self.config.requests_per_round}  # whatever the seeds

    def records_out(self, records: int) -> int:
        return self.config.target + (records if self.config.keep_seeds else 0)

    def preview(self, record: Record) -> list[tuple[str, Conversation]]:
        return [("request", self.request([record.prompt]))]

    def _examples(self, rng: random.Random, seeds: list[str], generated: list[str]) -> list[str]:
        """In-context tasks: ``generated_examples`` generated ones (when there are any), the rest seeds."""
        from_generated = min(self.config.generated_examples, len(generated))
        from_seeds = min(self.config.examples - from_generated, len(seeds))
        chosen = rng.sample(seeds, from_seeds) + rng.sample(generated, from_generated)
        rng.shuffle(chosen)
        return chosen

    def process_all(
        self,
        records: list[Record],
        teacher: Teacher | None,
        progress: Callable[[int], None],
        journal: Journal | None = None,
    ) -> list[Record | Drop]:
        assert teacher is not None
        growth = PoolGrowth(self, [r.prompt for r in records])
        rng = random.Random(self.stage_seed("examples"))
        for rnd in range(self.config.max_rounds):
            generated = [r.prompt for r in growth.new]
            requests = [self._examples(rng, growth.seeds, generated) for _ in range(self.config.requests_per_round)]
            params = [self.config.sampling.with_seed(self.stage_seed(rnd, j)) for j in range(len(requests))]
            completions = self._round(teacher, requests, params, rnd, journal)
            for j, (completion, examples) in enumerate(zip(completions, requests, strict=True)):
                progress(growth.take(completion, examples, rnd, j))
                if growth.done:
                    break
            if growth.done:
                break
        return [*(records if self.config.keep_seeds else []), *growth.new, *growth.drops]

    def candidates(self, completion: Completion) -> list[str]:
        """The new tasks in one answer: the JSON's list (its complete strings, if cut off), or split from text;
        numbers and bullets removed either way."""
        if not self.json_answers:
            return split_instructions(completion.text)
        value, _ = parse_json(completion.text)
        tasks = value.get("tasks") if isinstance(value, dict) else None
        if not isinstance(tasks, list):
            tasks = leading_strings(completion.text)
        return [line for task in tasks if isinstance(task, str) for line in split_instructions(task)]

    def _round(self, teacher, requests, params, rnd, journal) -> list[Completion]:
        """One round's completions; journaled, so a resumed run replays finished rounds without the teacher."""
        return self.remember_completions(
            journal, f"round-{rnd}", lambda: teacher.generate([self.request(e) for e in requests], params)
        )


class PoolGrowth:
    """The growing pool of one Self-Instruct run: the novelty index, accepted records, drops."""

    def __init__(self, stage: SelfInstruct, seeds: list[str]):
        self.stage, self.config = stage, stage.config
        self.seeds = seeds
        self.index = NoveltyIndex(self.config.rouge_threshold)
        for prompt in seeds:
            self.index.add(prompt)
        self.new: list[Record] = []
        self.drops: list[Drop] = []
        self._seen: dict[str, int] = {}

    @property
    def done(self) -> bool:
        return len(self.new) >= self.config.target

    def take(self, completion: Completion, examples: list[str], rnd: int, request: int) -> int:
        """Filter the candidates of one completion into the pool; returns how many joined."""
        step = GENERATION_STEP.answer(self.stage.name, completion, round=rnd, request=request, examples=examples)
        added = 0
        for text in self.stage.candidates(completion):
            if self.done:
                break
            self._seen[text] = self._seen.get(text, -1) + 1
            record = Record(id=make_record_id("self-instruct", text, self._seen[text]), prompt=text, steps=[step])
            reason, verdict = self._judge(text)
            if reason:
                self.drops.append(self.stage.drop(record, reason))
                continue
            nearest = self.index.texts[verdict.nearest] if verdict.nearest is not None else None
            for annotation, value in (
                (ORIGIN, "self_instruct"),
                (ROUND, rnd),
                (ROUGE_L_MAX, round(verdict.score, 4)),
                (NEAREST, nearest),
            ):
                annotation.set_on(record.meta, value)
            self.new.append(record)
            added += 1
        return added

    def _judge(self, text: str) -> tuple[str | None, Verdict]:
        """Why ``text`` is rejected (filters, then novelty; it joins the index when novel), and the verdict."""
        reason = rejection_reason(text, self.config.min_words, self.config.max_words, self.config.banned_keywords)
        if reason:
            return reason, Verdict(False, 0.0, None)
        verdict = self.index.offer(text)
        if verdict.novel:
            return None, verdict
        nearest = self.index.texts[verdict.nearest] if verdict.nearest is not None else ""
        return f"too similar (ROUGE-L {verdict.score:.2f} > {self.config.rouge_threshold} to {nearest!r})", verdict
