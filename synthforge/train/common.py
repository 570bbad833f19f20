"""What SFT and DPO training share: TRL arguments that are right on CPU and GPU, LoRA, saving, reporting."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from synthforge import __version__
from synthforge.errors import UserError
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
        return Path(config.out)
    data = Path(config.data)
    return (data if data.is_dir() else data.parent) / f"student-{kind}"


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
    out_dir: Path,
    train_rows: int,
    eval_rows: int,
    started: float,
    extra: dict[str, Any],
    data_kind: str | None = None,
) -> TrainingResult:
    """Save the student, training.json (config, metrics, versions) and loss.png; ``data_kind``: which file of a
    run directory the data came from (default: ``kind``'s)."""
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
    write_training_report(out_dir)
    return TrainingResult(out_dir, metrics, history)
