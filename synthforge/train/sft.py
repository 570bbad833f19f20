"""SFT: train a student on instruction/response data with TRL's ``SFTTrainer`` (assistant tokens only)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from synthforge.train.common import (
    TrainingResult,
    finish,
    out_dir_for,
    peft_config,
    training_output,
    trl_arguments,
)
from synthforge.train.config import SFTTrainingConfig
from synthforge.train.data import check_roles, fit_reasoning, load_rows, row_count, split
from synthforge.train.student import Student, load_student


@dataclass
class SFTSetup:
    """A ready TRL trainer with the student and the row counts of the split."""

    trainer: object
    student: Student
    train_rows: int
    eval_rows: int


class SFTTraining:
    """``SFTTraining(config).run()`` trains, saves model + tokenizer, ``training.json`` and ``loss.png``."""

    def __init__(self, config: SFTTrainingConfig):
        self.config = config

    def setup(self, work: Path | None = None) -> SFTSetup:
        """Load data and student and build TRL's trainer (rows become prompt/completion: answer-only loss);
        ``work``: where the run builds its output (default: the output directory)."""
        from trl import SFTConfig, SFTTrainer

        config = self.config
        rows = load_rows(config.data, "sft", assistant_turns=config.assistant_turns)
        train_rows, eval_rows = split(rows, config.eval_fraction, config.seed)
        student = load_student(config.model, config.device)
        check_roles(student.tokenizer, rows, config.model)
        train_rows, eval_rows = (fit_reasoning(student.tokenizer, part) for part in (train_rows, eval_rows))
        args = SFTConfig(
            **trl_arguments(config, student.model.device, work or out_dir_for(config, "sft"), eval_rows is not None)
        )
        trainer = SFTTrainer(
            model=student.model,
            args=args,
            train_dataset=train_rows,
            eval_dataset=eval_rows,
            processing_class=student.tokenizer,
            peft_config=peft_config(config.lora),
        )
        return SFTSetup(trainer, student, train_rows.num_rows, row_count(eval_rows))

    def run(self) -> TrainingResult:
        started = time.time()
        config = self.config
        with training_output(config, "sft", [config.data, config.model]) as output:
            setup = self.setup(output.work)
            setup.trainer.train()
            return finish(
                "sft", setup.trainer, setup.student, config, output, setup.train_rows, setup.eval_rows, started, {}
            )
