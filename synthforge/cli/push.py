"""``synthforge push RUN REPO_ID``: a thin command over synthforge.hub.push."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("repo_id")
@click.option(
    "--private/--public",
    default=True,
    show_default=True,
    help="A new repository's visibility; pushing to a public one needs --public (red-team data stays private).",
)
@click.option("--revision", help="The branch to commit to (created from main when missing; default main).")
@click.option("-m", "--message", help="The commit message (default: one naming the run).")
@click.option("--endpoint", help="The Hub's address (default: HF_ENDPOINT, else https://huggingface.co).")
def push(run: Path, repo_id: str, private: bool, revision: str | None, message: str | None, endpoint: str | None):
    """Publish a finished run to the Hugging Face Hub as a dataset, in one commit.

    \b
    It uploads one parquet file per config (sft, dpo, table), a dataset card whose configs point at them, and
    the run's manifest, resolved pipeline and judge and cost summaries under synthforge/. It replaces only files
    an earlier push wrote (listed in synthforge/pushed.json) and refuses a run whose export didn't finish.
    The token comes from HF_TOKEN or `hf auth login` and is never written anywhere.

    \b
      synthforge push outputs/cai-harmless my-org/cai-harmless            # private
      synthforge push outputs/cai-harmless my-org/cai-harmless --revision v2
    """
    from synthforge.hub.push import PushOptions, push_run

    result = push_run(PushOptions(run, repo_id, private, revision, message, endpoint))
    click.echo(f"pushed {len(result.written)} files to {repo_id} ({'private' if result.private else 'public'})")
    if result.removed:
        click.echo(f"removed {len(result.removed)} file(s) an earlier push wrote: {', '.join(result.removed)}")
    click.echo(f"commit: {result.commit_url}")
