"""Against a real OpenAI-compatible server we did not write: Hugging Face's `transformers serve` (the
`transformers[serving]` extra). It ignores `n`, `logprobs` and `top_logprobs`: the openai backend must fan out
for `n` by itself, and a stage that needs log-probabilities must stop at once with one line, checkpointing
nothing — never ledger every record as a teacher error and exit 0."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from synthforge.cli.main import main
from synthforge.teachers.backends.openai import OpenAISettings, OpenAITeacher
from synthforge.teachers.base import SamplingParams
from tests.conftest import write_pipeline
from tests.fault_server import free_port

pytest.importorskip("fastapi", reason="transformers serve needs the transformers[serving] extra (make installs it)")


@pytest.fixture(scope="module")
def smollm_dir() -> Path:
    """The embedded SmolLM2-135M as a transformers directory (a random tiny model only writes whitespace there)."""
    from synthforge.models import resolve_model

    return Path(resolve_model("embedded")[2])


@pytest.fixture(scope="module")
def hf_server(smollm_dir, tmp_path_factory):
    """`transformers serve SmolLM2` on a free 127.0.0.1 port, one torch thread, stopped after the module."""
    binary = Path(sys.executable).with_name("transformers")
    if not binary.exists():
        binary = Path(shutil.which("transformers") or "transformers")
    port = free_port()
    command = [str(binary), "serve", str(smollm_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(tmp_path_factory.mktemp("hf") / "transformers-serve.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"transformers serve did not start: {Path(log.name).read_text()[-3000:]}")
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _generate(project, pipeline, url, model, *extra):
    overrides = ["--teacher", f"openai:{model}@{url}", "--out", str(project / "out"), "--limit", "3", "--no-progress"]
    with pytest.raises(SystemExit) as info:
        main(["generate", str(pipeline), *overrides, *extra])
    return info.value.code


@pytest.mark.slow
def test_a_pipeline_runs_against_transformers_serve(hf_server, project, smollm_dir, capsys):
    path = write_pipeline(project, smollm_dir, max_new_tokens=8)
    assert _generate(project, path, hf_server, str(smollm_dir)) == 0
    rows = [json.loads(line) for line in (project / "out" / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(row["messages"][1]["content"].strip() for row in rows)


@pytest.mark.slow
def test_n_is_fanned_out_when_the_server_ignores_it(hf_server, smollm_dir, capsys):
    teacher = OpenAITeacher(str(smollm_dir), OpenAISettings(base_url=hf_server, retries=0), {"backend": "openai"})
    try:
        samples = teacher.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=6, n=2, seed=1))
    finally:
        teacher.close()
    assert len(samples[0]) == 2 and all(c.text for c in samples[0]) and "ignores 'n'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_judge_on_a_server_without_logprobs_stops_at_once_checkpointing_nothing(
    hf_server, project, smollm_dir, capsys
):
    path = project / "pipelines" / "judge.yaml"
    path.write_text(
        "name: judge\nseed: 1\nteacher: {model: embedded}\nseeds: {path: seeds/red-team.jsonl}\n"
        "stages:\n  - judge: {sampling: {max_new_tokens: 4}}\n"
    )
    code = _generate(project, path, hf_server, str(smollm_dir))
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "returned no logprobs" in lines[0] and "teacher.openai" in lines[0]
    checkpointed = [
        line for p in (project / "out" / "checkpoints").glob("*.jsonl") for line in p.read_text().splitlines()
    ]
    assert checkpointed == [] and not (project / "out" / "dropped.jsonl").exists()  # nothing judged, nothing ledgered
