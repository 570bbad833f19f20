"""Teacher backed by a transformers causal LM: batched, left-padded, chat-templated generation.

Sampling is done per row from counter-based noise keyed by the request's seed (a logits processor that
samples by the Gumbel-max trick and hands greedy search a one-hot choice), so a request's output depends
on its seed, not on which other requests share its batch.
"""

from __future__ import annotations

import functools
import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import DynamicCache, GenerationConfig, LogitsProcessor, LogitsProcessorList

from synthforge.errors import TeacherError
from synthforge.hashing import MASK32, fmix32
from synthforge.models import (
    PackedLinear,
    default_dtype,
    load_pretrained,
    pack_linear_weights,
    packs_weights,
    pad,
    resolve_model,
    token_logprobs,
    torch_device,
)
from synthforge.teachers.base import (
    CHOICE,
    CONTINUOUS,
    GENERATE,
    LOGPROBS,
    PROMPT_LOGPROBS,
    RAW_TEXT,
    SCORE,
    STRUCTURED,
    THINKING_BUDGET,
    TOKENS,
    Completion,
    Conversation,
    SamplingParams,
    per_conversation,
)
from synthforge.teachers.config import Backend, TeacherSpec
from synthforge.teachers.decoding import Decoder, Row, Submission, mergeable
from synthforge.teachers.grammar import Grammars
from synthforge.teachers.reasoning import THINK_TAGS, ThinkingBudget, opens_thinking, split_reasoning

MAX_LANES = 4  # decoding lanes on a CPU when not set: one per torch thread, at most this many


def row_uniforms(seeds: torch.Tensor, step: int | torch.Tensor, tokens: torch.Tensor | int) -> torch.Tensor:
    """Uniform noise in (0, 1) for each row and token: a pure function of (row seed, step, token id); ``step``
    is one for all rows or each row's own (continuous batching: rows are at different steps).

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


def _nucleus(probs: torch.Tensor, top_ps: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids by falling probability and a mask of those outside each row's top-p nucleus. Only the ``top_k``
    most likely are ranked when every row's nucleus lies within them (a partial sort instead of sorting the whole
    vocabulary each step); otherwise the whole vocabulary is sorted."""
    if top_k < probs.shape[-1]:
        ranked, order = probs.topk(top_k, dim=-1)
        outside = (ranked.cumsum(dim=-1) - ranked) > top_ps[:, None]
        if bool(outside[:, -1].all()):
            return order, outside
    ranked, order = probs.sort(dim=-1, descending=True)
    return order, (ranked.cumsum(dim=-1) - ranked) > top_ps[:, None]


def seeded_choice(
    scores: torch.Tensor,
    temperatures: torch.Tensor,
    top_ps: torch.Tensor,
    seeds: torch.Tensor,
    step: int | torch.Tensor,
    top_k: int = 256,
) -> torch.Tensor:
    """One token per row: temperature + top-p sampling by the Gumbel-max trick with counter-based noise keyed by
    (row seed, step), the argmax where the temperature is 0."""
    scores = scores.float()
    logits = scores / temperatures.clamp_min(1e-6)[:, None]
    order, outside = _nucleus(torch.softmax(logits, dim=-1), top_ps, top_k)
    # Only the nucleus needs noise: the widest row's nucleus bounds the columns drawn.
    width = int((~outside).sum(dim=-1).max())
    candidates = order[:, :width]
    gumbel = -torch.log(-torch.log(row_uniforms(seeds, step, candidates)))
    noisy = (logits.gather(-1, candidates) + gumbel).masked_fill(outside[:, :width], float("-inf"))
    sampled = candidates.gather(-1, noisy.argmax(dim=-1, keepdim=True)).squeeze(-1)
    return torch.where(temperatures <= 0, scores.argmax(dim=-1), sampled)


class SeededSampler(LogitsProcessor):
    """:func:`seeded_choice` as a logits processor for ``model.generate``: returns logits whose argmax is the
    sampled token, so greedy search performs the sampling."""

    def __init__(self, temperatures: torch.Tensor, top_ps: torch.Tensor, seeds: torch.Tensor, top_k: int = 256):
        self.temperatures = temperatures
        self.top_ps = top_ps
        self.seeds = seeds
        self.top_k = top_k
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        chosen = seeded_choice(scores, self.temperatures, self.top_ps, self.seeds, self.step, self.top_k)
        self.step += 1
        out = torch.full_like(scores.float(), float("-inf"))
        out[torch.arange(scores.shape[0], device=scores.device), chosen] = 0.0
        return out


class TransformersTeacher:
    """A :class:`~synthforge.teachers.base.Teacher` over a loaded model and tokenizer."""

    capabilities = frozenset({SCORE, CHOICE, RAW_TEXT, LOGPROBS, PROMPT_LOGPROBS, TOKENS})

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        weights_id: str,
        batch_size: int = 16,
        lanes: int = 1,
        continuous: bool = True,
        tags: Sequence[str] = THINK_TAGS,
    ):
        self.model = model.eval()
        self.tags = tuple(tags)
        self.tokenizer = tokenizer
        self.name = name
        self.weights_id = weights_id
        self.batch_size = batch_size
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"tokenizer of {name} has no chat template")
        self.device = next(model.parameters()).device
        self.packed = any(isinstance(m, PackedLinear) for m in model.modules())  # see pack_linear_weights
        self.eos_ids = self._eos_ids()
        self.context = getattr(model.config, "max_position_embeddings", None)
        self.lanes = lanes
        self.decoder: Decoder | None = None
        if continuous and mergeable(DynamicCache(config=model.config)):
            self.decoder = Decoder(
                model,
                tokenizer.pad_token_id,
                self.eos_ids,
                self._sample,
                self._stopped,
                batch_size,
                lanes,
                constrain=self._constrain,
            )
        self.max_in_flight = batch_size * lanes if self.decoder is not None else 1
        self._grammars: Grammars | None = None
        self._grammars_lock = threading.Lock()
        if self.decoder is not None:  # structured output is constrained in the decoder's sampling step
            self.capabilities = type(self).capabilities | {CONTINUOUS, STRUCTURED, THINKING_BUDGET}

    def close(self) -> None:
        """Stop the decoder's worker threads."""
        if self.decoder is not None:
            self.decoder.close()

    def _sample(self, logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
        """The decoder's sampler: each row's token from its own seed at its own step (and its log-probabilities
        under the model, when asked for)."""
        device = logits.device
        chosen = seeded_choice(
            logits,
            torch.tensor([r.temperature for r in rows], device=device),
            torch.tensor([r.top_p for r in rows], device=device),
            torch.tensor([r.seed for r in rows], dtype=torch.int64, device=device),
            torch.tensor([len(r.tokens) for r in rows], dtype=torch.int64, device=device),
        )
        asking = [i for i, r in enumerate(rows) if r.logprobs is not None]
        if asking:
            logprobs = torch.log_softmax(logits[asking].float(), dim=-1)
            for k, i in enumerate(asking):
                rows[i].token_logprobs.append(self._logprob_entry(logprobs[k], int(chosen[i]), rows[i].logprobs or 0))
        return chosen

    def _logprob_entry(self, logprobs: torch.Tensor, token: int, top: int) -> dict[str, Any]:
        entry = {"token": self._token_text(token), "logprob": float(logprobs[token]), "top": []}
        if top:
            best = logprobs.topk(top)
            pairs = zip(best.indices.tolist(), best.values.tolist(), strict=True)
            entry["top"] = [[self._token_text(int(t)), float(v)] for t, v in pairs]
        return entry

    def _stopped(self, row: Row) -> bool:
        """A row with stop strings ends as soon as its text holds one."""
        if not row.stop:
            return False
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        return any(s and s in text for s in row.stop)

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "backend": "transformers",
            "name": self.name,
            "weights": self.weights_id,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "device_type": self.device.type,
            **({"matmul": "onednn-packed"} if self.packed else {}),
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
        self,
        new_tokens: list[int],
        prompt_len: int,
        stop: tuple[str, ...],
        logprobs: list[dict] | None = None,
        complete: bool = False,
    ) -> Completion:
        """Cut a row's new tokens at EOS or a stop string, and say why it ended (``complete``: its grammar was
        complete, so it stopped as if at EOS)."""
        end = next((i for i, tok in enumerate(new_tokens) if tok in self.eos_ids), None)
        used = new_tokens if end is None else new_tokens[:end]
        text = self.tokenizer.decode(used, skip_special_tokens=True)
        reason = "stop" if end is not None or complete else "length"
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

    def _opens_thinking(self, prompt: list[int]) -> bool:
        """Whether the rendered prompt leaves the model inside a thinking block (its template opened it)."""
        return bool(self.tags) and opens_thinking(self.tokenizer.decode(prompt[-64:]), self.tags)

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[list[Completion]]:
        encoded = [self.encode_chat(c) for c in conversations]
        return self._reasoned(self._generate_encoded(encoded, params), encoded)

    def _reasoned(
        self, results: list[list[Completion]], encoded: list[list[int]], chat: Sequence[bool] | None = None
    ) -> list[list[Completion]]:
        """Chat completions with their thinking split from the answer (raw-text ones, ``chat`` false, as they
        are: a text continuation is returned whole, as vLLM's /v1/completions does)."""
        if not self.tags:
            return results
        out = []
        for i, samples in enumerate(results):
            if chat is not None and not chat[i]:
                out.append(samples)
                continue
            thinking = self._opens_thinking(encoded[i])
            split = [split_reasoning(c.text, self.tags, thinking) for c in samples]
            out.append([replace(c, text=a.strip(), reasoning=r) for c, (r, a) in zip(samples, split, strict=True)])
        return out

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
        if self.decoder is not None:
            return self._decode(encoded, all_params)
        if any(p.json_schema is not None or p.max_reasoning_tokens is not None for p in all_params):
            raise TeacherError(
                "structured output and thinking budgets need continuous batching "
                "(teacher.transformers.continuous_batching: true)",
                retryable=False,
            )
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

    def _decode(self, encoded: list[list[int]], all_params: list[SamplingParams]) -> list[list[Completion]]:
        """Every (prompt, sample) as a row of the continuous-batching decoder; rows from other callers share its
        batch without changing what each samples."""
        submission = self._submit(encoded, all_params)
        try:
            return submission.result()
        except torch.OutOfMemoryError as exc:
            submission.cancel()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise TeacherError(f"out of memory generating {len(submission.rows)} rows on {self.device}: {exc}") from exc

    def grammars(self) -> Grammars:
        """The grammar engine for this tokenizer (built on first use: about half a second)."""
        with self._grammars_lock:
            if self._grammars is None:
                vocab = self.model.get_output_embeddings().out_features
                self._grammars = Grammars(self.tokenizer, vocab, self.eos_ids)
            return self._grammars

    def _constrain(self, logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
        return self.grammars().mask(logits, [r.grammar for r in rows])

    def _submit(
        self, encoded: list[list[int]], all_params: list[SamplingParams], after: Callable[[Any], Any] | None = None
    ) -> Submission:
        """Queue every (prompt, sample) with the decoder (longest prompts first) and return at once; ``after``
        turns the finished completions into the result."""
        rows = [
            [
                Row(
                    ids=encoded[c],
                    temperature=p.temperature,
                    top_p=p.top_p,
                    max_new_tokens=p.max_new_tokens,
                    seed=_row_seed(p.seed, j),
                    stop=p.stop,
                    logprobs=p.logprobs,
                    grammar=self.grammars().matcher(p.json_schema) if p.json_schema is not None else None,
                    budget=self._budget(encoded[c], p),
                )
                for j in range(p.n)
            ]
            for c, p in enumerate(all_params)
        ]

        def finish() -> list[list[Completion]]:
            done = [
                [
                    self._finish(
                        r.tokens,
                        len(r.ids),
                        p.stop,
                        r.token_logprobs if p.logprobs is not None else None,
                        complete=r.grammar is not None and bool(r.grammar.is_stopped()),
                    )
                    for r in sample
                ]
                for sample, p in zip(rows, all_params, strict=True)
            ]
            return done if after is None else after(done)

        order = sorted((row for sample in rows for row in sample), key=lambda r: -len(r.ids))
        submission = Submission(order, finish)
        assert self.decoder is not None
        self.decoder.submit(order)
        return submission

    def _budget(self, prompt: list[int], params: SamplingParams) -> ThinkingBudget | None:
        """A row's thinking budget, when its request sets one (a schema-constrained answer has no thinking)."""
        if params.max_reasoning_tokens is None or params.json_schema is not None or not self.tags:
            return None
        opening, closing = self._tag_ids
        return ThinkingBudget(opening, closing, params.max_reasoning_tokens, inside=self._opens_thinking(prompt))

    @functools.cached_property
    def _tag_ids(self) -> tuple[list[int], list[int]]:
        """The thinking tags' token ids, as the tokenizer spells each tag on its own."""
        opening, closing = (self._encode_text(tag) for tag in self.tags)
        return opening, closing

    def start(
        self, prompts: Sequence[Conversation | str], params: SamplingParams | Sequence[SamplingParams]
    ) -> Submission:
        """Start generating for conversations (or raw texts) and return at once: ``result()`` waits for the
        completions, ``cancel()`` drops the rows not yet done (a client that has gone). Needs continuous batching."""
        encoded = [self._encode_text(p) if isinstance(p, str) else self.encode_chat(p) for p in prompts]
        self._check_context(encoded)
        chat = [not isinstance(p, str) for p in prompts]
        return self._submit(
            encoded, per_conversation(params, len(encoded)), lambda done: self._reasoned(done, encoded, chat)
        )

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
        chunks = [items[start : start + self.batch_size] for start in range(0, len(items), self.batch_size)]
        workers = min(self.lanes or 1, len(chunks))
        if workers > 1:  # torch runs each lane's share of the cores: chunks side by side use them all
            with ThreadPoolExecutor(workers, thread_name_prefix="score") as pool:
                values = list(pool.map(self._score_chunk, chunks))
        else:
            values = [self._score_chunk(chunk) for chunk in chunks]
        for chunk, chunk_values in zip(chunks, values, strict=True):
            for (c, k, _, _), value in zip(chunk, chunk_values, strict=True):
                scores[c][k] = value
        return scores

    @torch.inference_mode()  # thread-local: a worker thread of score() needs its own
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


@dataclass
class TransformersSettings:
    """How the in-process model generates: ``continuous_batching`` (rows join and leave the running batch at every
    step; off: static batches through ``model.generate``), ``lanes`` (batches decoding side by side, each on its
    share of the CPU threads; null: one per core on a CPU, one on a GPU), ``threads`` (torch's threads in all;
    null: torch's own choice, or one per lane on a CPU) and ``packed_weights`` (on a CPU, Linear weights
    prepacked once for oneDNN: 1.4x faster generation; off: torch's default matmul)."""

    continuous_batching: bool = True
    lanes: int | None = None
    threads: int | None = None
    packed_weights: bool = True

    def __post_init__(self) -> None:
        if self.lanes is not None and self.lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {self.lanes}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


def lanes_for(spec: TeacherSpec, settings: TransformersSettings) -> int:
    """Decoding lanes: as set, else on a CPU one per torch thread (at most ``MAX_LANES``: lanes side by side beat
    one lane's threads, 1.3x on 2 cores — benchmarks/teacher.py --mode decoder), one on a GPU; 1 without
    continuous batching. Threads counted from torch, so a Ray replica given one CPU decodes in one lane."""
    if not settings.continuous_batching:
        return 1
    if settings.lanes:
        return settings.lanes
    if torch_device(spec.device).type != "cpu":
        return 1
    return max(1, min(MAX_LANES, settings.threads or torch.get_num_threads()))


def load_teacher(
    ref: str = "embedded",
    batch_size: int = 16,
    device: str | None = None,
    settings: TransformersSettings | None = None,
    tags: Sequence[str] = THINK_TAGS,
) -> TransformersTeacher:
    """Load a transformers teacher; fp32 on CPU, bf16 on a capable GPU."""
    settings = settings or TransformersSettings(lanes=1)
    name, weights, location = resolve_model(ref, "teacher")
    model, tokenizer = load_pretrained(location, device, "teacher", ref)
    tokenizer.padding_side = "left"
    spec = TeacherSpec(model=ref, batch_size=batch_size, device=device)
    lanes = lanes_for(spec, settings)
    threads = settings.threads or torch.get_num_threads()
    if model.device.type == "cpu" and lanes > 1:
        torch.set_num_threads(max(1, threads // lanes))  # each lane its share: torch's pool is shared by all
    elif settings.threads:
        torch.set_num_threads(settings.threads)
    if settings.packed_weights:
        pack_linear_weights(model)
    return TransformersTeacher(
        model, tokenizer, name, weights, batch_size, lanes=lanes, continuous=settings.continuous_batching, tags=tags
    )


def _identity(spec: TeacherSpec, settings: TransformersSettings) -> dict[str, Any]:
    name, weights, _ = resolve_model(spec.model, "teacher")
    device = torch_device(spec.device)
    return {
        "backend": "transformers",
        "name": name,
        "weights": weights,
        "dtype": str(default_dtype(device)).removeprefix("torch."),
        "device_type": device.type,
        **({"matmul": "onednn-packed"} if settings.packed_weights and packs_weights(device) else {}),
    }


def _check(spec: TeacherSpec, where: str) -> None:
    """A device this machine lacks is a spec error before anything loads."""
    torch_device(spec.device, f"{where}.device")


BACKEND = Backend(
    name="transformers",
    settings=TransformersSettings,
    identity=_identity,
    capabilities=lambda spec, settings: (
        frozenset({GENERATE})
        | TransformersTeacher.capabilities
        | ({CONTINUOUS, STRUCTURED, THINKING_BUDGET} if settings.continuous_batching else set())
    ),
    build=lambda spec, settings, identity: load_teacher(
        spec.model, spec.batch_size or 16, spec.device, settings, spec.tags
    ),
    batch_size=16,
    check=_check,
    tokenizer=lambda spec, settings: spec.model,
    hints={
        STRUCTURED: "set teacher.transformers.continuous_batching: true (or the stage's constrained: false)",
        THINKING_BUDGET: "set teacher.transformers.continuous_batching: true",
    },
    in_flight=lambda spec, settings: (
        (spec.batch_size or 16) * lanes_for(spec, settings) if settings.continuous_batching else 1
    ),
)
