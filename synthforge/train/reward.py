"""Reward model: a scalar head on a causal LM, trained on preference pairs with TRL's ``RewardTrainer``.

Rows labelled by an AI judge (a ``confidence`` column, RL-CAI) train on soft labels by default: the
cross-entropy between σ(r_chosen − r_rejected) and the judge's probability. ``labels: hard`` uses TRL's
loss as it is; ``labels: margin`` TRL's margin loss (a ``margin`` column, else the judge's log-odds).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from synthforge.errors import UserError
from synthforge.train.common import (
    TrainingOutput,
    TrainingResult,
    finish,
    peft_config,
    training_output,
    trl_arguments,
    trl_config,
)
from synthforge.train.config import RewardTrainingConfig
from synthforge.train.data import check_roles, load_rows, row_count, split
from synthforge.train.reward_model import evaluate_rewards, load_reward_model, soft_label_loss
from synthforge.train.student import Student


def label_mode(config: RewardTrainingConfig, columns: list[str]) -> str:
    """The label mode to train with: ``auto`` is soft when rows carry the judge's confidence, else hard."""
    if config.labels == "auto":
        return "soft" if "confidence" in columns else "hard"
    if config.labels == "soft" and "confidence" not in columns:
        raise UserError(f"{config.data}: --labels soft needs a 'confidence' column (rows labelled by the judge)")
    return config.labels


def _with_labels(dataset, mode: str):
    """Rows with the label columns the trainer reads for ``mode``."""
    keep = ["prompt", "chosen", "rejected"]
    if mode == "soft":
        dataset = dataset.map(lambda row: {"soft_label": float(row["confidence"])})
        keep.append("soft_label")
    elif mode == "margin":
        if "margin" not in dataset.column_names:
            if "confidence" not in dataset.column_names:
                raise UserError("--labels margin needs a 'margin' or a 'confidence' column")
            dataset = dataset.map(lambda row: {"margin": _log_odds(float(row["confidence"]))})
        keep.append("margin")
    return dataset.select_columns(keep)


def _log_odds(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _soft_trainer_class():
    """TRL's RewardTrainer, with a ``soft_label`` column carried to the loss (the soft-label cross-entropy)."""
    from trl import RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    class SoftLabelCollator(DataCollatorForPreference):
        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            output = super().torch_call(examples)
            if "soft_label" in examples[0]:
                output["soft_label"] = torch.tensor([e["soft_label"] for e in examples], dtype=torch.float)
            return output

    class SoftLabelRewardTrainer(RewardTrainer):
        collator = SoftLabelCollator

        def _set_signature_columns_if_needed(self):
            if self._signature_columns is None:
                self._signature_columns = ["chosen_ids", "rejected_ids", "margin", "soft_label"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            target = inputs.pop("soft_label", None)
            if target is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            outputs = model(**inputs, use_cache=False)
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            loss = soft_label_loss(chosen, rejected, target.to(chosen.dtype))
            with torch.no_grad():
                self._metrics[mode]["accuracy"].append((chosen > rejected).float().mean().item())
                self._metrics[mode]["margin"].append((chosen - rejected).mean().item())
            return (loss, outputs) if return_outputs else loss

    return SoftLabelRewardTrainer, SoftLabelCollator


class RewardTraining:
    """``RewardTraining(config).run()`` evaluates, trains, evaluates again, saves the reward model and reports."""

    def __init__(self, config: RewardTrainingConfig):
        self.config = config

    def run(self) -> TrainingResult:

        config = self.config
        with training_output(config, "reward", [config.data, config.model]) as output:
            return self._run(config, output)

    def _run(self, config: RewardTrainingConfig, output: TrainingOutput) -> TrainingResult:
        from trl import RewardConfig

        started = time.time()
        rows = load_rows(config.data, "dpo", optional=("confidence", "margin"))
        mode = label_mode(config, rows.column_names)
        train_rows, eval_rows = split(_with_labels(rows, mode), config.eval_fraction, config.seed)
        held_out = [{**r, **({"confidence": r["soft_label"]} if "soft_label" in r else {})} for r in (eval_rows or [])]
        model, tokenizer, name, location = load_reward_model(config.model, config.device)
        check_roles(tokenizer, rows, config.model)
        before = evaluate_rewards(model, tokenizer, held_out, config.batch_size, config.max_length)
        arguments = trl_arguments(config, model.device, output.work, eval_rows is not None)
        args = trl_config(RewardConfig, **arguments, center_rewards_coefficient=config.center_rewards)
        trainer_class, collator_class = _soft_trainer_class()
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=train_rows,
            eval_dataset=eval_rows,
            processing_class=tokenizer,
            data_collator=collator_class(pad_token_id=tokenizer.pad_token_id),
            peft_config=peft_config(config.lora, task_type="SEQ_CLS"),
        )
        trainer.train()
        after = evaluate_rewards(trainer.model, tokenizer, held_out, config.batch_size, config.max_length)
        extra = {
            "labels": mode,
            "eval_before": before.as_dict() if before else None,
            "eval_after": after.as_dict() if after else None,
        }
        student = Student(trainer.model, tokenizer, name, location, added_chat_template=False)
        return finish(
            "reward",
            trainer,
            student,
            config,
            output,
            train_rows.num_rows,
            row_count(eval_rows),
            started,
            extra,
            data_kind="dpo",
        )
