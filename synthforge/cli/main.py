"""``synthforge`` entry point: user errors print one line and exit with code 2, no traceback."""

from __future__ import annotations

import sys

import click

from synthforge import __version__
from synthforge.cli.constitution import constitution
from synthforge.cli.dedup import dedup
from synthforge.cli.generate import generate
from synthforge.cli.report import report
from synthforge.cli.serve import serve
from synthforge.cli.train import evaluate, train
from synthforge.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="synthforge")
def cli() -> None:
    """synthforge: synthetic post-training data and Constitutional AI.

    \b
    Typical use:
      synthforge generate pipelines/cai-harmless.yaml      # SFT + DPO data in outputs/cai-harmless/
      synthforge generate pipelines/cai-harmless.yaml --teacher openai:MODEL@http://127.0.0.1:8000/v1
      synthforge serve --port 8000                         # share one teacher between runs
      synthforge constitution check constitutions/harmless.txt
      synthforge dedup outputs/cai-harmless --key prompt --out deduped.jsonl
      synthforge train sft --data outputs/cai-harmless --model embedded
      synthforge train dpo --data outputs/cai-harmless --model outputs/cai-harmless/student-sft
      synthforge train reward --data outputs/rlaif --model embedded --out outputs/reward-model
      synthforge train rlhf --prompts outputs/rlaif --model outputs/student-sft --reward outputs/reward-model
      synthforge eval --model outputs/cai-harmless/student-dpo --data outputs/cai-harmless
      synthforge eval compare --models embedded,outputs/cai-harmless/student-dpo
      synthforge report outputs/cai-harmless                # report.html (generate writes it too)
    """


cli.add_command(generate)
cli.add_command(serve)
cli.add_command(report)
cli.add_command(constitution)
cli.add_command(dedup)
cli.add_command(train)
cli.add_command(evaluate)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a :class:`UserError` anywhere becomes ``error: ...`` and exit code 2."""
    try:
        cli.main(args=argv, prog_name="synthforge", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(0)


if __name__ == "__main__":
    main()
