"""Teacher over an in-process ``vllm.LLM`` (``pip install synthforge[vllm]``, a CUDA GPU).

The translation between our requests and vLLM's objects lives in pure functions (unit-tested without vLLM);
:class:`VLLMTeacher` only calls them around ``LLM.chat`` / ``LLM.generate``. vLLM schedules its own
batches: each call hands it the whole chunk the engine gives us, ordered so that conversations sharing a
prefix (few-shot turns, one record's critique and revision) are adjacent for its prefix cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from synthforge.errors import TeacherError, UserError
from synthforge.hashing import canonical_json
from synthforge.teachers.base import (
    CHOICE,
    GENERATE,
    LOGPROBS,
    RAW_TEXT,
    SCORE,
    STRUCTURED,
    THINKING_BUDGET,
    Completion,
    Conversation,
    SamplingParams,
    per_conversation,
)
from synthforge.teachers.config import Backend, TeacherSpec
from synthforge.teachers.reasoning import THINK_TAGS, opens_thinking, split_reasoning

SUPPORTED = ">=0.12,<0.35"  # pyproject's range: what we send is checked against both ends' signatures (tests)
THINKING_BUDGET_SINCE = (0, 19)  # SamplingParams(thinking_token_budget=...) first appears in vLLM 0.19


def installed_version() -> tuple[int, ...] | None:
    """The installed vLLM's version (read from its metadata, without importing it), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("vllm")
    except PackageNotFoundError:
        return None
    return tuple(int(part) for part in text.split("+")[0].split(".")[:2] if part.isdigit())


def vllm_capabilities() -> frozenset[str]:
    """What the vLLM backend can do; a thinking budget only with a vLLM that has one (unknown: assumed, and the
    missing package is its own one-line error when the teacher is built)."""
    found = {GENERATE, SCORE, CHOICE, RAW_TEXT, LOGPROBS, STRUCTURED, THINKING_BUDGET}
    installed = installed_version()
    if installed is not None and installed < THINKING_BUDGET_SINCE:
        found.discard(THINKING_BUDGET)
    return frozenset(found)


@dataclass
class VLLMSettings:
    """Engine arguments of an in-process ``vllm.LLM``."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    dtype: str = "auto"
    seed: int = 0
    extra: dict = field(default_factory=dict)  # any other EngineArgs, passed through as given

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1:
            raise ValueError("tensor_parallel_size must be >= 1")
        if not (math.isfinite(self.gpu_memory_utilization) and 0 < self.gpu_memory_utilization <= 1):
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError("max_model_len must be >= 1")


def engine_kwargs(model: str, settings: VLLMSettings) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM(...)``."""
    kwargs: dict[str, Any] = {
        "model": model,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "enable_prefix_caching": settings.enable_prefix_caching,
        "dtype": settings.dtype,
        "seed": settings.seed,
    }
    if settings.max_model_len is not None:
        kwargs["max_model_len"] = settings.max_model_len
    return {**kwargs, **settings.extra}


def sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for ours (``max_tokens`` always set: vLLM's default is 16)."""
    kwargs: dict[str, Any] = {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_new_tokens,
        "seed": params.seed,
    }
    if params.stop:
        kwargs["stop"] = list(params.stop)
    if params.logprobs is not None:
        kwargs["logprobs"] = params.logprobs
    if params.json_schema is not None:  # vLLM >= 0.12: SamplingParams(structured_outputs=StructuredOutputsParams)
        kwargs["structured_outputs"] = {"json": params.json_schema}
    if params.max_reasoning_tokens is not None:  # needs the engine's reasoning_config (teacher.vllm.extra)
        kwargs["thinking_token_budget"] = params.max_reasoning_tokens
    return kwargs


def score_kwargs() -> dict[str, Any]:
    """``vllm.SamplingParams`` of a scoring request: one throw-away token, the prompt tokens' log-probabilities."""
    return {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}


def prefix_order(conversations: Sequence[Conversation]) -> list[int]:
    """Indices of ``conversations`` sorted so that shared prefixes are adjacent (stable for equal ones)."""
    keys = [[canonical_json(message) for message in conversation] for conversation in conversations]
    return sorted(range(len(conversations)), key=lambda i: keys[i])


def _logprob_value(value: Any) -> float:
    return float(value.logprob if hasattr(value, "logprob") else value["logprob"])


def _sample_logprobs(output: Any) -> list[dict[str, Any]] | None:
    steps = getattr(output, "logprobs", None)
    if steps is None:
        return None
    rows = []
    for token_id, step in zip(output.token_ids, steps, strict=False):
        chosen = step[token_id]
        ranked = sorted(step.items(), key=lambda kv: -_logprob_value(kv[1]))
        rows.append(
            {
                "token": getattr(chosen, "decoded_token", None) or str(token_id),
                "logprob": _logprob_value(chosen),
                "top": [[getattr(v, "decoded_token", None) or str(t), _logprob_value(v)] for t, v in ranked],
            }
        )
    return rows


def parse_request_output(output: Any, tags: Sequence[str] = THINK_TAGS) -> list[Completion]:
    """Our completions from one ``vllm.RequestOutput`` (one per sample), thinking split from the answer."""
    prompt_tokens = len(output.prompt_token_ids or [])
    thinking = opens_thinking(getattr(output, "prompt", None) or "", tags)
    completions = []
    for sample in output.outputs:
        if sample.finish_reason not in ("stop", "length"):
            raise TeacherError(f"vLLM ended a sample with finish_reason {sample.finish_reason!r}")
        reasoning, answer = split_reasoning(sample.text, tags, thinking)
        completions.append(
            Completion(
                text=answer.strip(),
                reasoning=reasoning,
                finish_reason=sample.finish_reason,
                prompt_tokens=prompt_tokens,
                completion_tokens=len(sample.token_ids),
                logprobs=_sample_logprobs(sample),
            )
        )
    return completions


def continuation_logprob(prompt_logprobs: Sequence[Any], token_ids: Sequence[int], start: int) -> float:
    """Sum of the log-probabilities of ``token_ids[start:]`` in a request's ``prompt_logprobs``."""
    total = 0.0
    for position in range(start, len(token_ids)):
        entry = prompt_logprobs[position]
        if entry is None or token_ids[position] not in entry:
            raise TeacherError(f"vLLM returned no log-probability for prompt position {position}", retryable=False)
        total += _logprob_value(entry[token_ids[position]])
    return total


class VLLMTeacher:
    """A :class:`~synthforge.teachers.base.Teacher` over ``vllm.LLM``."""

    capabilities = property(lambda self: vllm_capabilities())

    def __init__(self, model: str, settings: VLLMSettings, identity: dict[str, Any], tags: Sequence[str] = THINK_TAGS):
        try:
            import vllm
        except ImportError:
            raise UserError(
                "teacher.backend vllm needs vLLM: pip install 'synthforge[vllm]' (Linux with a CUDA GPU)"
            ) from None
        self._vllm = vllm
        self._identity = identity
        self.tags = tuple(tags)
        self.llm = vllm.LLM(**engine_kwargs(model, settings))
        self.tokenizer = self.llm.get_tokenizer()

    @property
    def identity(self) -> dict[str, Any]:
        return self._identity

    def _params(self, params: SamplingParams) -> Any:
        kwargs = sampling_kwargs(params)
        if "structured_outputs" in kwargs:
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(**kwargs["structured_outputs"])
        return self._vllm.SamplingParams(**kwargs)

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[list[Completion]]:
        all_params = per_conversation(params, len(conversations))
        order = prefix_order(conversations)
        outputs = self.llm.chat(
            [list(conversations[i]) for i in order], [self._params(all_params[i]) for i in order], use_tqdm=False
        )
        results: list[list[Completion]] = [[] for _ in conversations]
        for i, output in zip(order, outputs, strict=True):
            results[i] = parse_request_output(output, self.tags)
        return results

    def render_chat(self, conversation: Conversation, add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    def complete(
        self, texts: Sequence[str], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[list[Completion]]:
        all_params = per_conversation(params, len(texts))
        outputs = self.llm.generate(list(texts), [self._params(p) for p in all_params], use_tqdm=False)
        return [parse_request_output(o, ()) for o in outputs]  # a text continuation is returned whole

    def score(self, conversations: Sequence[Conversation], continuations: Sequence[Sequence[str]]) -> list[list[float]]:
        items: list[tuple[int, int, list[int], int]] = []
        for c, (conversation, candidates) in enumerate(zip(conversations, continuations, strict=True)):
            prompt = self.tokenizer(self.render_chat(conversation, True), add_special_tokens=False)["input_ids"]
            for k, candidate in enumerate(candidates):
                target = self.tokenizer(candidate, add_special_tokens=False)["input_ids"]
                items.append((c, k, prompt + target, len(prompt)))
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for _, _, ids, _ in items],
            self._vllm.SamplingParams(**score_kwargs()),
            use_tqdm=False,
        )
        scores: list[list[float]] = [[0.0] * len(cands) for cands in continuations]
        for (c, k, ids, start), output in zip(items, outputs, strict=True):
            scores[c][k] = continuation_logprob(output.prompt_logprobs, ids, start)
        return scores


def _identity(spec: TeacherSpec, settings: VLLMSettings) -> dict[str, Any]:
    path = Path(spec.model).expanduser()
    weights = spec.model
    if path.is_dir() and (path / "config.json").is_file():
        from synthforge.models import weights_id

        weights = weights_id(path)
    return {
        "backend": "vllm",
        "name": path.name if path.is_dir() else spec.model,
        "weights": weights,
        "dtype": settings.dtype,
        "max_model_len": settings.max_model_len,
    }


def _devices(spec: TeacherSpec, settings: VLLMSettings) -> int:
    """Accelerators one replica spans: tensor x pipeline parallel size."""
    return settings.tensor_parallel_size * int(settings.extra.get("pipeline_parallel_size", 1))


def _replica_spec(spec: TeacherSpec, settings: VLLMSettings) -> TeacherSpec:
    """A replica over several GPUs runs vLLM's own Ray executor in its placement group (as Ray Data LLM does);
    the identity, hence cache keys, is unchanged."""
    if _devices(spec, settings) == 1:
        return spec
    extra = {"distributed_executor_backend": "ray", **settings.extra}
    return replace(spec, options=replace(settings, extra=extra))


BACKEND = Backend(
    name="vllm",
    settings=VLLMSettings,
    identity=_identity,
    capabilities=lambda spec, settings: vllm_capabilities(),
    build=lambda spec, settings, identity: VLLMTeacher(spec.model, settings, identity, spec.tags),
    batch_size=1024,
    devices=_devices,
    replica_spec=_replica_spec,
)
