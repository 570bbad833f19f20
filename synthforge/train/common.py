"""What every trainer shares: TRL arguments right on CPU and GPU, LoRA, the output directory, saving, reporting."""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from synthforge import __version__
from synthforge.errors import UserError
from synthforge.files import (
    check_not_input,
    claim_dir,
    discard_staging,
    journal_path_for,
    output_lock,
    publish,
    staging_dir,
)
from synthforge.provenance import package_versions
from synthforge.report.html import write_training_report
from synthforge.settings import config_to_dict
from synthforge.train.config import LoraSettings, TrainingConfig
from synthforge.train.data import data_provenance
from synthforge.train.report import save_loss_curve, write_training_json
from synthforge.train.student import Student


@dataclass
class TrainingResult:
    """Where the student was saved and what the run measured."""

    out_dir: Path
    metrics: dict[str, Any]
    log_history: list[dict[str, Any]] = field(default_factory=list)


def out_dir_for(config: TrainingConfig, kind: str) -> Path:
    """``config.out``, or ``<data>/student-<kind>`` next to the training data."""
    if config.out:
        return Path(config.out).expanduser()
    data = Path(config.data).expanduser()
    return (data if data.is_dir() else data.parent) / f"student-{kind}"


def is_training_dir(path: Path, kind: str) -> bool:
    """A directory ``synthforge train KIND`` wrote (its ``training.json`` says so)."""
    try:
        written = json.loads((path / "training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(written, dict) and written.get("kind") == kind and "synthforge_version" in written


@dataclass
class TrainingOutput:
    """Where a training run builds its output (``work``, hidden beside it) and where it is published."""

    final: Path
    work: Path
    kind: str


@contextlib.contextmanager
def training_output(config: TrainingConfig, kind: str, inputs: list[str | None]) -> Iterator[TrainingOutput]:
    """Claim the output directory before anything loads (new, empty, or written by ``train KIND`` before; never
    an input such as the data or the model), hold its lock, and build the output in a staging folder that
    :func:`publish_output` moves into place whole."""
    final = out_dir_for(config, kind)
    option, command = "--out", f"train {kind}"
    check_not_input(final, [Path(p).expanduser() for p in inputs if p and Path(p).expanduser().exists()], option)
    with output_lock(final, option, command):
        claim_dir(final, lambda d: is_training_dir(d, kind), option, command)
        work = staging_dir(final)
        try:
            yield TrainingOutput(final, work, kind)
        finally:
            discard_staging(work, final)


def publish_output(output: TrainingOutput) -> None:
    """Replace the output directory with the finished one in one step (journaled, see ``files.publish``)."""
    publish([(output.work, output.final)], journal_path_for(output.final))


def trl_arguments(config: TrainingConfig, device: torch.device, out_dir: Path, has_eval: bool) -> dict[str, Any]:
    """TrainingArguments values for TRL configs. On CPU: fp32 and no gradient checkpointing (TRL defaults to
    bf16 and checkpointing, which cost 10x+ here); on GPU: bf16 where supported."""
    on_gpu = device.type == "cuda"
    return {
        "output_dir": str(out_dir / "trainer"),
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "learning_rate": config.learning_rate,
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "max_length": config.max_length,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": config.logging_steps,
        "eval_strategy": "epoch" if has_eval else "no",
        "save_strategy": "no",
        "report_to": [],
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        "fp16": False,
        "gradient_checkpointing": False,
        "use_cpu": not on_gpu,
        "dataloader_num_workers": 0,
        "disable_tqdm": False,
    }


def trl_config(cls, **kwargs):
    """A TRL config with transformers' deprecation notices about ``gradient_checkpointing`` silenced:
    TRL 1.x still uses that name (we set it off on purpose) and the notices would only confuse users."""
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
    return cls(**kwargs)


def peft_config(lora: LoraSettings, task_type: str = "CAUSAL_LM"):
    """A peft LoraConfig, or None when LoRA is off."""
    if not lora.enabled:
        return None
    try:
        from peft import LoraConfig
    except ImportError:
        raise UserError("LoRA needs peft: pip install 'synthforge[train]'") from None
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type=task_type,
    )


def save_student(trainer, student: Student, out_dir: Path, lora: bool) -> None:
    """Save the trained model (LoRA merged into the weights) with its tokenizer and chat template."""
    model = trainer.model
    if lora:
        model = model.merge_and_unload()
    model.save_pretrained(out_dir)
    student.tokenizer.save_pretrained(out_dir)
    scratch = out_dir / "trainer"  # TRL's output_dir; with save_strategy "no" it normally stays empty
    if scratch.is_dir() and not any(scratch.iterdir()):
        scratch.rmdir()


def finish(
    kind: str,
    trainer,
    student: Student,
    config: TrainingConfig,
    output: TrainingOutput,
    train_rows: int,
    eval_rows: int,
    started: float,
    extra: dict[str, Any],
    data_kind: str | None = None,
) -> TrainingResult:
    """Save the student, training.json (config, metrics, versions), loss.png and the report into the output, then
    publish it whole; ``data_kind``: which file of a run directory the data came from (default: ``kind``'s)."""
    if trainer.state.global_step == 0:
        raise UserError(f"train {kind}: the trainer took no optimisation step ({train_rows} training rows)")
    out_dir = output.work
    save_student(trainer, student, out_dir, config.lora.enabled)
    history = list(trainer.state.log_history)
    train_log = next((e for e in reversed(history) if "train_loss" in e), {})
    tokens = int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)
    seconds = time.time() - started
    metrics = {
        "train_loss": train_log.get("train_loss"),
        "train_runtime_s": train_log.get("train_runtime"),
        "train_steps": trainer.state.global_step,
        "final_eval_loss": next((e["eval_loss"] for e in reversed(history) if "eval_loss" in e), None),
        "train_rows": train_rows,
        "eval_rows": eval_rows,
        "seconds": round(seconds, 2),
        **({"tokens_seen": tokens} if tokens else {}),
        **extra,
    }
    if eval_rows == 0:
        metrics["no_evaluation"] = no_evaluation_reason(train_rows, config.eval_fraction)
    plotted = save_loss_curve(history, out_dir / "loss.png", f"{kind.upper()} · {student.name}")
    write_training_json(
        out_dir / "training.json",
        {
            "kind": kind,
            "synthforge_version": __version__,
            "base_model": {"name": student.name, "path": student.path},
            "added_chat_template": student.added_chat_template,
            "config": config_to_dict(config),
            "data": data_provenance(config.data, data_kind or kind),
            "metrics": metrics,
            "loss_curve": "loss.png" if plotted else None,
            "log_history": history,
            "versions": package_versions(),
        },
    )
    write_training_report(out_dir, name=output.final.name)
    publish_output(output)
    return TrainingResult(output.final, metrics, history)


def no_evaluation_reason(train_rows: int, eval_fraction: float) -> str:
    """Why a training run held nothing out to evaluate on (said in its output and training.json)."""
    if eval_fraction <= 0:
        return "no held-out evaluation: eval_fraction is 0"
    return f"no held-out evaluation: only {train_rows} row(s), too few to hold any out"
