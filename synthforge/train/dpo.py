"""DPO: train a student on chosen/rejected pairs with TRL's ``DPOTrainer``, evaluated before and after.

The reference model is explicit: with LoRA, the adapter-disabled base (TRL's behaviour when no reference
is passed); without LoRA, ``reference`` (default: the starting model) loaded from disk, because TRL would
otherwise reload it from ``config._name_or_path``, which may not be the model on disk.
"""

from __future__ import annotations

import time

from synthforge.train.common import (
    TrainingOutput,
    TrainingResult,
    finish,
    peft_config,
    training_output,
    trl_arguments,
    trl_config,
)
from synthforge.train.config import DPOTrainingConfig
from synthforge.train.data import check_roles, fit_reasoning, load_rows, row_count, split
from synthforge.train.evaluate import preference_margins, summarize
from synthforge.train.student import load_student


class DPOTraining:
    """``DPOTraining(config).run()`` evaluates, trains, evaluates again, saves model and reports."""

    def __init__(self, config: DPOTrainingConfig):
        self.config = config

    def run(self) -> TrainingResult:

        config = self.config
        with training_output(config, "dpo", [config.data, config.model, config.reference]) as output:
            return self._run(config, output)

    def _run(self, config: DPOTrainingConfig, output: TrainingOutput) -> TrainingResult:
        from trl import DPOConfig, DPOTrainer

        started = time.time()
        rows = load_rows(config.data, "dpo")
        train_rows, eval_rows = split(rows, config.eval_fraction, config.seed)
        student = load_student(config.model, config.device)
        check_roles(student.tokenizer, rows, config.model)
        train_rows, eval_rows = (fit_reasoning(student.tokenizer, part) for part in (train_rows, eval_rows))
        reference = None
        if not config.lora.enabled:
            reference = load_student(config.reference or config.model, config.device, for_training=False).model
        held_out = list(eval_rows) if (eval_rows is not None and config.evaluate) else []
        before = self._margins(student.model, student.tokenizer, held_out)
        args = trl_config(
            DPOConfig,
            **trl_arguments(config, student.model.device, output.work, eval_rows is not None),
            beta=config.beta,
            loss_type=[config.loss_type],
            precompute_ref_log_probs=config.precompute_ref,
        )
        trainer = DPOTrainer(
            model=student.model,
            ref_model=reference,
            args=args,
            train_dataset=train_rows,
            eval_dataset=eval_rows,
            processing_class=student.tokenizer,
            peft_config=peft_config(config.lora),
        )
        trainer.train()
        after = self._margins(trainer.model, student.tokenizer, held_out)
        extra = {
            "eval_before": summarize(before).as_dict() if held_out else None,
            "eval_after": summarize(after).as_dict() if held_out else None,
        }
        if reference is not None and held_out:
            base = self._margins(reference, student.tokenizer, held_out)
            extra["eval_after_vs_reference"] = summarize(after, base).as_dict()
        return finish(
            "dpo",
            trainer,
            student,
            config,
            output,
            train_rows.num_rows,
            row_count(eval_rows),
            started,
            extra,
        )

    def _margins(self, model, tokenizer, rows) -> list[float]:
        """Held-out preference margins of ``model`` (in eval mode; its training mode is restored)."""
        if not rows:
            return []
        was_training = model.training
        model.eval()
        margins = preference_margins(model, tokenizer, rows, self.config.batch_size, self.config.max_length)
        model.train(was_training)
        return margins
