"""``synthforge serve``: an OpenAI-compatible server over an in-process teacher."""

from __future__ import annotations

from pathlib import Path

import click

from synthforge.cli.options import finite
from synthforge.serve.app import ServeConfig
from synthforge.serve.app import serve as run_server
from synthforge.serve.batches import BatchSettings
from synthforge.teachers.factory import build_teacher, check_device, spec_from_ref


@click.command()
@click.option(
    "--teacher",
    "model",
    default="embedded",
    show_default=True,
    metavar="REF",
    help="The model: 'embedded', a transformers model directory, a .gguf file, or any --teacher reference "
    "of `synthforge generate` (e.g. vllm:MODEL).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--api-key",
    envvar="SYNTHFORGE_SERVE_API_KEY",
    metavar="KEY",
    help="Require 'Authorization: Bearer KEY' (or set SYNTHFORGE_SERVE_API_KEY, which keeps it out of ps).",
)
@click.option("--model-name", help="The name clients send as 'model' (default: the --teacher reference).")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Most samples run together in one teacher call.",
)
@click.option(
    "--batch-wait-ms",
    type=click.FloatRange(min=0),
    callback=finite,
    default=5.0,
    show_default=True,
    help="How long to collect requests that arrive together before running them.",
)
@click.option("--device", help="cpu, cuda, cuda:N (default: cuda if available).")
@click.option("--threads", type=click.IntRange(min=1), help="torch threads (default: torch's own choice).")
@click.option(
    "--max-tokens",
    "default_max_tokens",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="max_tokens of requests that don't say.",
)
@click.option(
    "--max-body-mb",
    type=click.FloatRange(min=0, min_open=True),
    callback=finite,
    default=8.0,
    show_default=True,
    help="Largest request body accepted (larger ones are answered 413).",
)
@click.option(
    "--max-prompts",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Most prompts in one /v1/completions request.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Turn on the Batch API (/v1/files, /v1/batches) and keep its files and batches in this folder, so they "
    "survive a restart (one server per folder).",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0, min_open=True),
    callback=finite,
    default=200.0,
    show_default=True,
    help="Largest file accepted at /v1/files (the Batch API).",
)
@click.option(
    "--batch-retention-days",
    type=click.FloatRange(min=0, min_open=True),
    callback=finite,
    default=30.0,
    show_default=True,
    help="Files and batches older than this are deleted from --state-dir.",
)
def serve(
    model,
    host,
    port,
    api_key,
    model_name,
    batch_size,
    batch_wait_ms,
    device,
    threads,
    default_max_tokens,
    max_body_mb,
    max_prompts,
    state_dir,
    max_upload_mb,
    batch_retention_days,
):
    """Serve a teacher over the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models).

    \b
    With --state-dir it also speaks OpenAI's Batch API (/v1/files, /v1/batches): batch requests run at low
    priority beside interactive ones, and their state survives a restart.

    \b
    Several pipeline runs on one machine should share one server rather than each load the model:
    two processes each running torch on the same cores slow each other down several-fold. Point them
    at it with --teacher openai:NAME@http://127.0.0.1:PORT/v1. Requests that arrive together are
    batched together; each keeps its own seed, so results don't depend on what shared its batch.
    """
    spec = spec_from_ref(model, batch_size=batch_size, device=device)
    check_device(spec, "serve")
    if threads:
        import torch

        torch.set_num_threads(threads)
    teacher = build_teacher(spec)
    name = model_name or model
    click.echo(f"serving {name} on http://{host}:{port}/v1 (batch {batch_size}, wait {batch_wait_ms:g} ms)", err=True)
    batch = None
    if state_dir is not None:
        batch = BatchSettings(
            state_dir.expanduser(), int(max_upload_mb * (1 << 20)), retention_s=batch_retention_days * 86400
        )
    config = ServeConfig(
        name, api_key, batch_size, batch_wait_ms, default_max_tokens, int(max_body_mb * (1 << 20)), max_prompts, batch
    )
    run_server(teacher, config, host, port)
