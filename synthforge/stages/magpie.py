"""Magpie (Xu et al., 2024): an aligned chat model, given only its chat template up to where the user's
message starts, writes a user query by itself; those queries become prompts for later stages.

Needs a teacher with the ``raw_text`` capability (render its chat template, continue raw text): the transformers
and vLLM backends, or an OpenAI-compatible server with ``teacher.openai.tokenizer`` set. Others get a clear
error before any request rather than a silent fallback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from synthforge.annotations import ORIGIN, PRE_QUERY_SHA256
from synthforge.errors import UserError
from synthforge.hashing import stable_hash
from synthforge.records import Drop, Record, make_record_id
from synthforge.stages.base import DatasetStage, Journal
from synthforge.teachers.base import (
    RAW_TEXT,
    Completion,
    Conversation,
    SamplingParams,
    Teacher,
    backend_name,
    capabilities_of,
)
from synthforge.trace import QUERY_STEP

SENTINEL = "\u2063MAGPIE-USER-QUERY\u2063"
CHUNK = 32


def pre_query_text(render: Callable[[Conversation], str], system: str | None = None) -> str:
    """The chat-template text before the first user message's content (the Magpie pre-query template)."""
    messages: Conversation = [{"role": "system", "content": system}] if system else []
    rendered = render([*messages, {"role": "user", "content": SENTINEL}])
    position = rendered.find(SENTINEL)
    if position < 0:
        raise UserError("magpie: the chat template did not render the user message; cannot find where it starts")
    return rendered[:position]


@dataclass
class MagpieConfig:
    """How many queries to sample, an optional system prompt, and a minimum query length."""

    num_prompts: int = 20
    system: str | None = None
    min_words: int = 3
    sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=1.0, top_p=0.99, max_new_tokens=128)
    )

    def __post_init__(self) -> None:
        if self.num_prompts < 1:
            raise ValueError("num_prompts must be >= 1")


class Magpie(DatasetStage):
    """Passes input records through and adds ``num_prompts`` self-written user queries as new records."""

    kind = "magpie"
    traces = (QUERY_STEP,)
    annotates = (ORIGIN, PRE_QUERY_SHA256)
    tags = ("magpie",)
    Config = MagpieConfig
    writes = ("prompt",)
    generates = True
    needs = frozenset({RAW_TEXT})

    def progress_total(self, records: list[Record]) -> int:
        return self.config.num_prompts

    def process_all(
        self,
        records: list[Record],
        teacher: Teacher | None,
        progress: Callable[[int], None],
        journal: Journal | None = None,
    ) -> list[Record | Drop]:
        if RAW_TEXT not in capabilities_of(teacher):
            backend = backend_name(teacher)
            raise UserError(
                f"magpie needs a teacher that can render its chat template and continue raw text "
                f"(the raw_text capability); backend {backend!r} can't"
            )
        assert teacher is not None
        prefix = pre_query_text(teacher.render_chat, self.config.system)
        params = [self.config.sampling.with_seed(self.stage_seed("query", i)) for i in range(self.config.num_prompts)]
        completions: list[Completion] = []
        for start in range(0, len(params), CHUNK):  # journaled chunks: a killed run resumes between them
            chunk = params[start : start + CHUNK]
            completions += self.remember_completions(
                journal, f"queries-{start}", lambda chunk=chunk: teacher.complete([prefix] * len(chunk), chunk)
            )
        results: list[Record | Drop] = list(records)
        seen: dict[str, int] = {}
        for i, completion in enumerate(completions):
            query = completion.text.strip()
            seen[query] = seen.get(query, -1) + 1
            record = Record(
                id=make_record_id("magpie", query, seen[query]),
                prompt=query,
                steps=[QUERY_STEP.answer(self.name, completion, index=i)],
                meta=_origin(prefix),
            )
            progress(1)
            if len(query.split()) < self.config.min_words:
                results.append(self.drop(record, f"query too short (< {self.config.min_words} words)"))
            elif completion.finish_reason == "length":
                results.append(self.drop(record, "query cut off (hit max_new_tokens)"))
            elif seen[query] > 0:
                results.append(self.drop(record, "duplicate query"))
            else:
                results.append(record)
        return results


def _origin(prefix: str) -> dict[str, str]:
    """A Magpie prompt's annotations: where it came from, and the pre-query text's hash."""
    meta: dict[str, str] = {}
    ORIGIN.set_on(meta, "magpie")
    PRE_QUERY_SHA256.set_on(meta, stable_hash(prefix))
    return meta
