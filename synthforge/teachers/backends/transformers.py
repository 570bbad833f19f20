"""Teacher backed by a transformers causal LM: batched, left-padded, chat-templated generation.

Sampling is done per row from counter-based noise keyed by the request's seed (a logits processor that
samples by the Gumbel-max trick and hands greedy search a one-hot choice), so a request's output depends
on its seed, not on which other requests share its batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from synthforge.errors import TeacherError
from synthforge.hashing import MASK32, fmix32
from synthforge.models import default_dtype, load_pretrained, pad, resolve_model, token_logprobs, torch_device
from synthforge.teachers.base import (
    CHOICE,
    GENERATE,
    LOGPROBS,
    PROMPT_LOGPROBS,
    RAW_TEXT,
    SCORE,
    TOKENS,
    Completion,
    Conversation,
    SamplingParams,
    per_conversation,
)
from synthforge.teachers.config import Backend, TeacherSpec


def row_uniforms(seeds: torch.Tensor, step: int, tokens: torch.Tensor | int) -> torch.Tensor:
    """Uniform noise in (0, 1) for each row and token: a pure function of (row seed, step, token id).

    ``tokens`` is a vocabulary size (noise for every id) or a (rows, k) tensor of token ids.
    Counter-based (hash) randomness: a row's draw is independent of the other rows in its batch, and the
    whole batch is drawn with a few vectorised ops instead of one generator call per row.
    """
    if isinstance(tokens, int):
        tokens = torch.arange(tokens, device=seeds.device, dtype=torch.int64)[None, :]
    lo, hi = seeds & MASK32, (seeds >> 32) & MASK32
    h = fmix32((lo ^ ((step * 0x9E3779B1) & MASK32))[:, None] ^ ((tokens * 0x85EBCA77) & MASK32))
    h = fmix32(h ^ hi[:, None])
    return ((h.to(torch.float32) + 0.5) / 4294967296.0).clamp_(1e-7, 1.0 - 1e-7)


class SeededSampler(LogitsProcessor):
    """Temperature + top-p sampling by the Gumbel-max trick with per-row counter-based noise.

    Returns logits whose argmax is the sampled token, so greedy search performs the sampling.
    """

    def __init__(self, temperatures: torch.Tensor, top_ps: torch.Tensor, seeds: torch.Tensor, top_k: int = 256):
        self.temperatures = temperatures
        self.top_ps = top_ps
        self.seeds = seeds
        self.top_k = top_k
        self.step = 0

    def _nucleus(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids by falling probability and a mask of those outside each row's top-p nucleus. Only the
        ``top_k`` most likely are ranked when every row's nucleus lies within them (a partial sort instead
        of sorting the whole vocabulary each step); otherwise the whole vocabulary is sorted."""
        if self.top_k < probs.shape[-1]:
            ranked, order = probs.topk(self.top_k, dim=-1)
            outside = (ranked.cumsum(dim=-1) - ranked) > self.top_ps[:, None]
            if bool(outside[:, -1].all()):
                return order, outside
        ranked, order = probs.sort(dim=-1, descending=True)
        return order, (ranked.cumsum(dim=-1) - ranked) > self.top_ps[:, None]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()
        logits = scores / self.temperatures.clamp_min(1e-6)[:, None]
        order, outside = self._nucleus(torch.softmax(logits, dim=-1))
        # Only the nucleus needs noise: the widest row's nucleus bounds the columns drawn.
        width = int((~outside).sum(dim=-1).max())
        candidates = order[:, :width]
        gumbel = -torch.log(-torch.log(row_uniforms(self.seeds, self.step, candidates)))
        self.step += 1
        noisy = (logits.gather(-1, candidates) + gumbel).masked_fill(outside[:, :width], float("-inf"))
        sampled = candidates.gather(-1, noisy.argmax(dim=-1, keepdim=True)).squeeze(-1)
        chosen = torch.where(self.temperatures <= 0, scores.argmax(dim=-1), sampled)
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(scores.shape[0], device=scores.device), chosen] = 0.0
        return out


class TransformersTeacher:
    """A :class:`~synthforge.teachers.base.Teacher` over a loaded model and tokenizer."""

    capabilities = frozenset({SCORE, CHOICE, RAW_TEXT, LOGPROBS, PROMPT_LOGPROBS, TOKENS})

    def __init__(self, model: Any, tokenizer: Any, name: str, weights_id: str, batch_size: int = 16):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.weights_id = weights_id
        self.batch_size = batch_size
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"tokenizer of {name} has no chat template")
        self.device = next(model.parameters()).device
        self.eos_ids = self._eos_ids()
        self.context = getattr(model.config, "max_position_embeddings", None)

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "backend": "transformers",
            "name": self.name,
            "weights": self.weights_id,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "device_type": self.device.type,
        }

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return {i for i in ids if i is not None}

    def encode_chat(self, conversation: Conversation) -> list[int]:
        """Token ids of a conversation rendered with the chat template, ready for the assistant's turn."""
        return self._encode_text(self.render_chat(conversation, add_generation_prompt=True))

    def _encode_text(self, text: str) -> list[int]:
        """Token ids of text as it stands (special tokens only where the text spells them)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _finish(
        self, new_tokens: list[int], prompt_len: int, stop: tuple[str, ...], logprobs: list[dict] | None = None
    ) -> Completion:
        """Cut a row's new tokens at EOS or a stop string, and say why it ended."""
        end = next((i for i, tok in enumerate(new_tokens) if tok in self.eos_ids), None)
        used = new_tokens if end is None else new_tokens[:end]
        text = self.tokenizer.decode(used, skip_special_tokens=True)
        reason = "stop" if end is not None else "length"
        cuts = [text.find(s) for s in stop if s and s in text]
        if cuts:
            text, reason = text[: min(cuts)], "stop"
        count = len(used) + (1 if end is not None else 0)
        kept = None if logprobs is None else logprobs[:count]
        return Completion(
            text=text.strip(), finish_reason=reason, prompt_tokens=prompt_len, completion_tokens=count, logprobs=kept
        )

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def _sampled_logprobs(self, logits: tuple[torch.Tensor, ...], tokens: torch.Tensor, top: int) -> list[list[dict]]:
        """Per row, per generated step: the sampled token's log-probability under the model (temperature 1,
        before any sampling transform, as vLLM reports them) and the ``top`` most likely tokens."""
        rows: list[list[dict]] = [[] for _ in range(tokens.shape[0])]
        for step, step_logits in enumerate(logits):
            logprobs = torch.log_softmax(step_logits.float(), dim=-1)
            picked = logprobs.gather(-1, tokens[:, step : step + 1]).squeeze(-1).tolist()
            best = logprobs.topk(top, dim=-1) if top else None
            for i in range(tokens.shape[0]):
                entry = {"token": self._token_text(int(tokens[i, step])), "logprob": picked[i], "top": []}
                if best is not None:
                    entry["top"] = [
                        [self._token_text(int(t)), float(v)]
                        for t, v in zip(best.indices[i].tolist(), best.values[i].tolist(), strict=True)
                    ]
                rows[i].append(entry)
        return rows

    def _generate_rows(self, rows: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[Completion]:
        """Generate one batch; CUDA running out of memory is a retryable teacher error (the engine splits)."""
        try:
            return self._generate_batch(rows, params, seeds)
        except torch.OutOfMemoryError as exc:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise TeacherError(f"out of memory generating {len(rows)} rows on {self.device}: {exc}") from exc

    @torch.inference_mode()
    def _generate_batch(self, rows: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[Completion]:
        ids, mask = (t.to(self.device) for t in pad(rows, self.tokenizer.pad_token_id, left=True))
        sampler = SeededSampler(
            temperatures=torch.full((len(rows),), params.temperature, device=self.device),
            top_ps=torch.full((len(rows),), params.top_p, device=self.device),
            seeds=torch.tensor(seeds, dtype=torch.int64, device=self.device),
        )
        config = GenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=params.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_ids),
            stop_strings=list(params.stop) or None,
            output_logits=params.logprobs is not None,
            return_dict_in_generate=params.logprobs is not None,
        )
        want_logprobs = params.logprobs is not None
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=config,
            logits_processor=LogitsProcessorList([sampler]),
            tokenizer=self.tokenizer if params.stop else None,
        )
        sequences = out.sequences if want_logprobs else out
        width = ids.shape[1]
        new = sequences[:, width:]
        logprobs = self._sampled_logprobs(out.logits, new, params.logprobs or 0) if want_logprobs else None
        return [
            self._finish(new[i].tolist(), len(rows[i]), params.stop, logprobs[i] if logprobs else None)
            for i in range(len(rows))
        ]

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[list[Completion]]:
        return self._generate_encoded([self.encode_chat(c) for c in conversations], params)

    def render_chat(self, conversation: Conversation, add_generation_prompt: bool = False) -> str:
        """The conversation as text, rendered by the tokenizer's chat template."""
        return self.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    def complete(
        self, texts: Sequence[str], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[list[Completion]]:
        """Continue raw texts (no chat template applied), e.g. a chat template's pre-query prefix (Magpie)."""
        return self._generate_encoded([self._encode_text(t) for t in texts], params)

    @property
    def context_window(self) -> int | None:
        """Tokens the model can attend to (a prompt must leave room for at least one new token)."""
        return self.context

    def count_tokens(self, prompt: Conversation | str) -> int:
        """Tokens of a prompt as it would be sent: a conversation up to the assistant's turn, or raw text."""
        return len(self._encode_text(prompt) if isinstance(prompt, str) else self.encode_chat(prompt))

    def _check_context(self, rows: Sequence[list[int]]) -> None:
        """A prompt that fills the model's context window can't be answered: a teacher error for its record
        (not retried; the engine ledgers it with its length), before any compute is spent on it."""
        longest = max((len(r) for r in rows), default=0)
        if self.context and longest >= self.context:
            raise TeacherError(
                f"prompt of {longest} tokens does not fit the teacher's context window of {self.context} tokens",
                retryable=False,
            )

    def _generate_encoded(
        self, encoded: list[list[int]], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[list[Completion]]:
        self._check_context(encoded)
        all_params = per_conversation(params, len(encoded))
        # One row per (prompt, sample); rows sharing settings are batched, longest first.
        rows: list[tuple[int, int]] = [(c, j) for c, p in enumerate(all_params) for j in range(p.n)]
        groups: dict[SamplingParams, list[tuple[int, int]]] = {}
        for c, j in rows:
            groups.setdefault(all_params[c].with_seed(0), []).append((c, j))
        results: list[list[Completion | None]] = [[None] * p.n for p in all_params]
        for shared, members in groups.items():
            members.sort(key=lambda cj: -len(encoded[cj[0]]))
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                seeds = [_row_seed(all_params[c].seed, j) for c, j in chunk]
                done = self._generate_rows([encoded[c] for c, _ in chunk], shared, seeds)
                for (c, j), completion in zip(chunk, done, strict=True):
                    results[c][j] = completion
        return [list(r) for r in results]  # type: ignore[arg-type]

    @torch.inference_mode()
    def score(self, conversations: Sequence[Conversation], continuations: Sequence[Sequence[str]]) -> list[list[float]]:
        items: list[tuple[int, int, list[int], list[int]]] = []
        for c, (conv, cands) in enumerate(zip(conversations, continuations, strict=True)):
            prompt = self.encode_chat(conv)
            for k, cand in enumerate(cands):
                items.append((c, k, prompt, self._encode_text(cand)))
        scores: list[list[float]] = [[0.0] * len(cands) for cands in continuations]
        self._check_context([p + t for _, _, p, t in items])
        items.sort(key=lambda it: -(len(it[2]) + len(it[3])))
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            for (c, k, _, _), value in zip(chunk, self._score_chunk(chunk), strict=True):
                scores[c][k] = value
        return scores

    def _score_chunk(self, chunk: list[tuple[int, int, list[int], list[int]]]) -> list[float]:
        rows = self._token_logprobs([(p, t) for _, _, p, t in chunk])
        return [float(sum(row)) for row in rows]

    def _token_logprobs(self, pairs: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        return token_logprobs(self.model, pairs, self.tokenizer.pad_token_id)

    @torch.inference_mode()
    def continuation_token_logprobs(
        self, conversation: Conversation | None, text: str
    ) -> tuple[int, list[tuple[int, str, float | None]]]:
        """What a server reports as prompt log-probabilities: the number of prefix tokens (a conversation
        rendered up to the assistant's turn, or none for raw text), then ``text``'s tokens as (id, text,
        log-probability given everything before it; None for a sequence's very first token)."""
        prefix = self.encode_chat(conversation) if conversation is not None else []
        target = self._encode_text(text)
        if not target:
            return len(prefix), []
        values: list[float | None] = list(self._token_logprobs([(prefix, target)])[0])
        if not prefix:
            values = [None, *values]
        return len(prefix), [(t, self._token_text(t), v) for t, v in zip(target, values, strict=True)]


def _row_seed(seed: int | None, sample_index: int) -> int:
    """Seed of sample ``sample_index`` of a request; an unseeded request gets fresh entropy."""
    base = secrets.randbits(62) if seed is None else seed
    return (base * 1_000_003 + sample_index) & ((1 << 63) - 1)


def load_teacher(ref: str = "embedded", batch_size: int = 16, device: str | None = None) -> TransformersTeacher:
    """Load a transformers teacher; fp32 on CPU, bf16 on a capable GPU."""
    name, weights, location = resolve_model(ref, "teacher")
    model, tokenizer = load_pretrained(location, device, "teacher", ref)
    tokenizer.padding_side = "left"
    return TransformersTeacher(model, tokenizer, name=name, weights_id=weights, batch_size=batch_size)


def _identity(spec: TeacherSpec, settings: None) -> dict[str, Any]:
    name, weights, _ = resolve_model(spec.model, "teacher")
    device = torch_device(spec.device)
    return {
        "backend": "transformers",
        "name": name,
        "weights": weights,
        "dtype": str(default_dtype(device)).removeprefix("torch."),
        "device_type": device.type,
    }


def _check(spec: TeacherSpec, where: str) -> None:
    """A device this machine lacks is a spec error before anything loads."""
    torch_device(spec.device, f"{where}.device")


BACKEND = Backend(
    name="transformers",
    settings=None,
    identity=_identity,
    capabilities=lambda spec, settings: frozenset({GENERATE}) | TransformersTeacher.capabilities,
    build=lambda spec, settings, identity: load_teacher(spec.model, spec.batch_size or 16, spec.device),
    batch_size=16,
    check=_check,
)
