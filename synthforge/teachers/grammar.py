"""Constrained decoding from a JSON Schema with llguidance: at every step a row's grammar says which tokens may
come next, the others are masked out before sampling, and the answer is valid JSON of the schema by
construction.

Why llguidance: it is one of vLLM's structured-output engines (``guided_decoding_backend="guidance"``), so a
schema constrains the same way in-process, on vLLM and through ``synthforge serve``; its wheel is a 3 MB Rust
library with no dependencies, while xgrammar (vLLM's default) pulls in Triton (1 GB) and is built for GPUs. A
mask depends only on the row's own tokens, so sampling stays seeded per request.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import torch

# Compact JSON (no free whitespace: a complete answer can only be followed by the end of the turn, not by
# newlines until max_new_tokens), with readable separators; a schema's own "x-guidance" may say otherwise.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def grammar_of(schema: dict[str, Any]) -> str:
    """The llguidance grammar of a JSON Schema (not yet checked; see :func:`grammar_problem`)."""
    import llguidance

    return llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema, sort_keys=True), defaults=JSON_OPTIONS)


def grammar_problem(schema: dict[str, Any]) -> str | None:
    """Why the grammar engine can't compile ``schema`` (e.g. a regex look-around), or None; needs no model."""
    import llguidance

    try:
        message = llguidance.LLMatcher.validate_grammar(grammar_of(schema))
    except ValueError as exc:
        return str(exc).splitlines()[0]
    return " ".join(message.split()) or None


class Grammars:
    """Matchers for one tokenizer: a fresh matcher per row and schema (grammars are cached by the schema's text)."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: set[int]):
        import llguidance.hf

        self.vocab_size = vocab_size
        self.eos_ids = eos_ids
        self._tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=sorted(eos_ids))
        self._grammar = lru_cache(maxsize=64)(lambda text: grammar_of(json.loads(text)))

    def matcher(self, schema: dict[str, Any]) -> Any:
        """A new matcher at the start of ``schema``'s grammar."""
        import llguidance

        text = json.dumps(schema, sort_keys=True)
        matcher = llguidance.LLMatcher(self._tokenizer, self._grammar(text), log_level=0)
        if matcher.is_error():
            raise ValueError(f"the grammar engine can't compile this schema: {matcher.get_error()}")
        return matcher

    def mask(self, logits: torch.Tensor, matchers: list[Any | None]) -> torch.Tensor:
        """``logits`` with every token a row's matcher forbids set to -inf (rows without a matcher unchanged)."""
        rows = [i for i, m in enumerate(matchers) if m is not None]
        if not rows:
            return logits
        words = (logits.shape[1] + 31) // 32
        packed = torch.empty((len(rows), words), dtype=torch.int32)
        for k, i in enumerate(rows):
            bits = matchers[i].compute_bitmask()
            packed[k, : len(bits) // 4] = torch.frombuffer(bytearray(bits), dtype=torch.int32)[:words]
            packed[k, len(bits) // 4 :] = 0
        shifts = torch.arange(32, dtype=torch.int32)
        allowed = ((packed.unsqueeze(-1) >> shifts) & 1).bool().reshape(len(rows), -1)[:, : logits.shape[1]]
        out = logits.clone()
        index = torch.tensor(rows)
        out[index] = out[index].masked_fill(~allowed.to(logits.device), float("-inf"))
        return out


def accept(matcher: Any, token: int) -> str | None:
    """Advance ``matcher`` by ``token``; the grammar's complaint if it refuses it (a bug: tokens are masked)."""
    if matcher.consume_token(token):
        return None
    return matcher.get_error() or "token refused by the grammar"
