"""Continuous batching over a Hugging Face causal LM: iteration-level scheduling with per-row seeded sampling.

Rows (one prompt, one sample) wait in a queue; a worker admits them into the running batch between decoding
steps — their prompts prefilled together, their key/value caches merged into the batch's, left-padded — samples
one token per row per step from noise keyed by (row seed, the row's own step), and lets a row that ends leave at
the next step. A row's output depends on its prompt and seed, not on what shared its batch, and a request that
arrives mid-generation starts at the next step instead of waiting for the batch to end.

``lanes`` workers run batches side by side (each with its share of the CPU threads), pulling from one queue:
on a CPU, two single-thread lanes make more tokens per second than one lane with two threads.
"""

from __future__ import annotations

import inspect
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from synthforge.models import pad
from synthforge.teachers.grammar import accept

Sampler = Callable[[torch.Tensor, "list[Row]"], torch.Tensor]


@dataclass(eq=False)
class Row:
    """One sample being generated: its prompt, settings and seed, the tokens so far and where they go."""

    ids: list[int]
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # None: none; k: each token's log-probability and its top k
    grammar: Any = None  # a grammar matcher (teachers.grammar): only the tokens it allows are sampled
    budget: Any = None  # a thinking budget (teachers.reasoning): past it, the closing tag's tokens are forced
    done: Future = field(default_factory=Future)
    tokens: list[int] = field(default_factory=list)
    token_logprobs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Batch:
    """The rows decoding together: their key/value cache (left-padded), its mask, each row's next position and
    next-token logits."""

    rows: list[Row]
    cache: Any
    mask: torch.Tensor
    positions: torch.Tensor
    logits: torch.Tensor


def mergeable(cache: Any) -> bool:
    """A cache whose rows can be joined and dropped: full-attention dynamic layers only (not sliding windows)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)


def _left_pad_seq(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """``tensor`` (batch, heads, seq, dim) with zeros added before its sequence up to ``length``."""
    missing = length - tensor.shape[-2]
    if missing <= 0:
        return tensor
    shape = (*tensor.shape[:-2], missing, tensor.shape[-1])
    return torch.cat([tensor.new_zeros(shape), tensor], dim=-2)


class Submission:
    """Rows submitted together (one call's): ``future`` is done when all are; ``cancel`` drops those not done."""

    def __init__(self, rows: list[Row], finish: Callable[[], Any]):
        self.rows, self._finish = rows, finish
        self.future: Future = Future()
        self._left = len(rows)
        self._lock = threading.Lock()
        for row in rows:
            row.done.add_done_callback(self._one_done)
        if not rows:
            self.future.set_result(None)

    def _one_done(self, done: Future) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if self.future.done():
            return
        if done.cancelled():
            self.future.cancel()
        elif done.exception() is not None:
            self.future.set_exception(done.exception())
        elif last:
            self.future.set_result(None)

    def result(self) -> Any:
        """Wait for every row, then what ``finish`` makes of them (a row's error is raised here)."""
        self.future.result()
        return self._finish()

    def cancel(self) -> None:
        for row in self.rows:
            row.done.cancel()


def admitted_rows(active: list[int], lane: int, waiting: int, max_batch: int, block: bool) -> int:
    """How many of ``waiting`` rows lane ``lane`` admits, each lane running ``active[k]`` rows of at most
    ``max_batch``: at most its fair share of all rows (lanes stay balanced: one lane taking every request would
    leave the others' cores idle). A nearly full lane (less than a quarter of its batch free) takes none until
    more rows fit or every waiting row does: one prefill of several rows costs little more than one of a single
    row. A lane held below its batch by its fair share takes its share at once. An empty lane (``block``) takes
    at least one."""
    share = -(-(sum(active) + waiting) // len(active))
    room = max_batch - active[lane]
    free = min(room, max(share - active[lane], 1 if block else 0))
    if not block and room < max(1, max_batch // 4) and waiting > free:
        return 0
    return min(free, waiting)


class Decoder:
    """Generates rows with continuous batching on one model (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        pad_id: int,
        eos_ids: set[int],
        sample: Sampler,
        is_stopped: Callable[[Row], bool],
        max_batch: int = 16,
        lanes: int = 1,
        constrain: Callable[[torch.Tensor, list[Row]], torch.Tensor] | None = None,
    ):
        self.model, self.pad_id, self.eos_ids = model, pad_id, eos_ids
        self.sample, self.is_stopped, self.constrain = sample, is_stopped, constrain
        self.max_batch, self.lanes = max_batch, max(1, lanes)
        self.device = next(model.parameters()).device
        self._keeps_last = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._waiting: deque[Row] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._active = [0] * self.lanes  # rows each lane runs, as of its last admission or the last rows that left
        self.admitted = [0] * self.lanes  # rows each lane has taken, for tests and statistics
        self.steps = 0  # decoding steps run (all lanes), for tests and statistics

    def submit(self, rows: Sequence[Row]) -> None:
        """Queue rows; each row's ``done`` future gets the row back when it has ended."""
        with self._changed:
            if not self._threads:
                for lane in range(self.lanes):
                    thread = threading.Thread(
                        target=self._work, args=(lane,), name=f"synthforge-decoder-{lane}", daemon=True
                    )
                    thread.start()
                    self._threads.append(thread)
            self._waiting.extend(rows)
            self._changed.notify_all()

    def close(self) -> None:
        """Stop the lanes' workers and wait for them (a worker still inside torch at interpreter exit aborts it)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=60)

    def _take(self, lane: int, active: int, block: bool) -> list[Row]:
        """Waiting rows for lane ``lane`` (running ``active`` rows) to admit, as many as :func:`admitted_rows`
        says; an empty lane (``block``) waits for work."""
        with self._changed:
            self._active[lane] = active
            while block and not self._waiting and not self._closed:
                self._changed.wait()
            free = admitted_rows(self._active, lane, len(self._waiting), self.max_batch, block)
            taken = []
            while self._waiting and len(taken) < free:
                row = self._waiting.popleft()
                if not row.done.cancelled():
                    taken.append(row)
            self._active[lane] += len(taken)
            self.admitted[lane] += len(taken)
            return taken

    def _work(self, lane: int) -> None:
        batch: _Batch | None = None
        while not self._closed:
            new = self._take(lane, len(batch.rows) if batch else 0, block=batch is None)
            try:
                if new:
                    batch = self._merge(batch, self._prefill(new))
                if batch is None:
                    continue
                batch = self._step(batch, lane)
            except Exception as exc:  # noqa: BLE001 - every waiting caller gets the error, the worker goes on
                for row in [*(batch.rows if batch else []), *new]:
                    if not row.done.done():
                        row.done.set_exception(exc)
                batch = None

    @torch.inference_mode()
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> Any:
        """The model over ``ids``; logits of the last position only (a prompt's others would cost a vocabulary-wide
        product per token, a fifth of a small model's prefill, and nothing reads them)."""
        return self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            cache=cache,
            use_cache=True,
            **({"logits_to_keep": 1} if self._keeps_last else {}),
        )

    def _prefill(self, rows: list[Row]) -> _Batch:
        """The new rows' prompts in one forward pass (left-padded, positions counted from each row's first token)."""
        from transformers import DynamicCache

        ids, mask = pad([r.ids for r in rows], self.pad_id, left=True)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        out = self._forward(ids, mask, positions, DynamicCache(config=self.model.config))
        logits = out.logits[:, -1, :].float()
        return _Batch(rows, out.cache, mask, positions[:, -1] + 1, logits)

    def _merge(self, batch: _Batch | None, new: _Batch) -> _Batch:
        """One batch of both: caches and masks left-padded to the longer, rows stacked."""
        if batch is None:
            return new
        length = max(batch.mask.shape[1], new.mask.shape[1])
        for old_layer, new_layer in zip(batch.cache.layers, new.cache.layers, strict=True):
            old_layer.keys = torch.cat([_left_pad_seq(old_layer.keys, length), _left_pad_seq(new_layer.keys, length)])
            old_layer.values = torch.cat(
                [_left_pad_seq(old_layer.values, length), _left_pad_seq(new_layer.values, length)]
            )
        masks = [torch.nn.functional.pad(m, (length - m.shape[1], 0)) for m in (batch.mask, new.mask)]
        return _Batch(
            batch.rows + new.rows,
            batch.cache,
            torch.cat(masks),
            torch.cat([batch.positions, new.positions]),
            torch.cat([batch.logits, new.logits]),
        )

    def _step(self, batch: _Batch, lane: int = 0) -> _Batch | None:
        """Sample one token for every row; rows that ended leave (the lane's count of rows is corrected before
        their callers hear of it, so a request sent in reply joins the lane with room); the others take one step
        forward."""
        logits = batch.logits
        if self.constrain is not None and any(r.grammar is not None for r in batch.rows):
            logits = self.constrain(logits, batch.rows)  # tokens a row's grammar forbids can't be sampled
        logits = _force(logits, batch.rows)
        tokens = self.sample(logits, batch.rows).tolist()
        self.steps += 1
        going, ended_rows = [], []
        for index, (row, token) in enumerate(zip(batch.rows, tokens, strict=True)):
            if row.done.cancelled():
                continue  # its caller has gone: it leaves the batch
            row.tokens.append(token)
            if row.budget is not None:
                row.budget.observe(row.tokens)
            ended = row.grammar is not None and _grammar_ended(row.grammar, token)
            if ended or token in self.eos_ids or len(row.tokens) >= row.max_new_tokens or self.is_stopped(row):
                ended_rows.append(row)
            else:
                going.append(index)
        if len(going) < len(batch.rows):
            with self._changed:
                self._active[lane] = len(going)
        for row in ended_rows:
            row.done.set_result(row)
        if not going:
            return None
        if len(going) < len(batch.rows):
            batch = self._keep(batch, going)
        ids = torch.tensor([[batch.rows[i].tokens[-1]] for i in range(len(batch.rows))], dtype=torch.long)
        mask = torch.cat([batch.mask, torch.ones((len(batch.rows), 1), dtype=torch.long)], dim=1)
        out = self._forward(ids, mask, batch.positions[:, None], batch.cache)
        return _Batch(batch.rows, out.cache, mask, batch.positions + 1, out.logits[:, -1, :].float())

    def _keep(self, batch: _Batch, keep: list[int]) -> _Batch:
        """The batch without the rows that ended, and without the cache columns that are padding for all."""
        index = torch.tensor(keep, dtype=torch.long)
        mask = batch.mask[index]
        first = int(mask.any(dim=0).long().argmax())
        for layer in batch.cache.layers:
            layer.keys = layer.keys[index.to(layer.keys.device), :, first:, :]
            layer.values = layer.values[index.to(layer.values.device), :, first:, :]
        rows = [batch.rows[i] for i in keep]
        return _Batch(rows, batch.cache, mask[:, first:], batch.positions[index], batch.logits[index])


def _force(logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
    """Logits under which a row whose thinking budget is closing its block can only emit the next forced token."""
    forced = [(i, r.budget.forced()) for i, r in enumerate(rows) if r.budget is not None]
    forced = [(i, token) for i, token in forced if token is not None]
    if not forced:
        return logits
    logits = logits.clone()
    for i, token in forced:
        logits[i].fill_(float("-inf"))
        logits[i, token] = 0.0
    return logits


def _grammar_ended(matcher: Any, token: int) -> bool:
    """Advance a row's grammar by its new token; True once the grammar is complete (nothing more may follow)."""
    problem = accept(matcher, token)
    if problem is not None:
        raise RuntimeError(f"the grammar refused a token it had allowed: {problem}")  # a bug, never data
    return bool(matcher.is_stopped())
