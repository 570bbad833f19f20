"""``synthforge`` entry point: user errors print one line and exit with code 2, no traceback."""

from __future__ import annotations

import importlib
import sys

import click

from synthforge import __version__
from synthforge.errors import RunStopped, UserError

# Each command's module is imported when the command runs (dedup, train and serve pull in heavy libraries that
# `generate` against a server never needs): name -> "module:attribute", in the order --help lists them.
COMMANDS = {
    "generate": "synthforge.cli.generate:generate",
    "init": "synthforge.cli.project:init",
    "list": "synthforge.cli.project:list_builtins",
    "serve": "synthforge.cli.serve:serve",
    "batches": "synthforge.cli.batches:batches",
    "report": "synthforge.cli.report:report",
    "constitution": "synthforge.cli.constitution:constitution",
    "dedup": "synthforge.cli.dedup:dedup",
    "push": "synthforge.cli.push:push",
    "train": "synthforge.cli.train:train",
    "eval": "synthforge.cli.eval:evaluate",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="synthforge")
def cli() -> None:
    """synthforge: synthetic post-training data and Constitutional AI.

    \b
    Typical use:
      synthforge generate cai-harmless                     # SFT + DPO data in outputs/cai-harmless/
      synthforge generate cai-harmless --teacher openai:MODEL@http://127.0.0.1:8000/v1
      synthforge init my-project                           # copies of the pipelines, prompts, constitutions
      synthforge list                                      # built-in pipelines, constitutions, stages
      synthforge serve --port 8000                         # share one teacher between runs
      synthforge constitution check my-project/constitutions/harmless.txt
      synthforge dedup outputs/cai-harmless --key prompt --out deduped.jsonl
      synthforge train sft --data outputs/cai-harmless --model embedded
      synthforge train dpo --data outputs/cai-harmless --model outputs/cai-harmless/student-sft
      synthforge train reward --data outputs/rlaif --model embedded --out outputs/reward-model
      synthforge train rlhf --prompts outputs/rlaif --model outputs/student-sft --reward outputs/reward-model
      synthforge eval --model outputs/cai-harmless/student-dpo --data outputs/cai-harmless
      synthforge eval compare --models embedded,outputs/cai-harmless/student-dpo
      synthforge report outputs/cai-harmless                # report.html (generate writes it too)
      synthforge push outputs/cai-harmless my-org/cai-harmless   # to the Hub, private, one commit
    """


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a :class:`UserError` anywhere becomes ``error: ...`` and exit code 2, a run stopped on purpose
    (:class:`RunStopped`) its one line and its exit code."""
    try:
        cli.main(args=argv, prog_name="synthforge", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except RunStopped as exc:  # on purpose: the budget is spent, or the judge is unreliable (exit 3, 4)
        click.echo(str(exc), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(0)


if __name__ == "__main__":
    main()
