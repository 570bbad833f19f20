"""Teacher throughput: generated tokens/s at batch sizes > 1 as a ratio to batch 1, same process, same prompts.

    python benchmarks/teacher.py                       # embedded SmolLM2-135M on this machine
    python benchmarks/teacher.py --teacher DIR --batch-sizes 1,16,64 --device cuda
    python benchmarks/teacher.py --mode overhead       # respond stage via the engine vs a plain generate loop
    python benchmarks/teacher.py --mode serve          # 8 clients through `synthforge serve` vs in-process

Also prints the teacher's start time (load from the converted cache).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthforge.models import resolve_model  # noqa: E402
from synthforge.teachers.backends.transformers import load_teacher  # noqa: E402
from synthforge.teachers.base import SamplingParams  # noqa: E402


def prompts(count: int) -> list[list[dict[str, str]]]:
    lines = (REPO / "pipelines" / "seeds" / "red-team.jsonl").read_text().splitlines()
    texts = [json.loads(line)["prompt"] for line in lines if line]
    return [[{"role": "user", "content": texts[i % len(texts)]}] for i in range(count)]


def overhead(teacher, args) -> None:
    """The respond stage through the engine (checkpoints, trace, export) vs a plain ``model.generate`` loop at
    the same batch size on the same prompts and token budget; greedy, so both produce the same tokens."""
    import torch

    from synthforge.engine.runner import RunOptions, run_pipeline
    from synthforge.engine.spec import load_pipeline
    from synthforge.prompts import load_template

    size = args.batch
    count = min(args.prompts, len((REPO / "pipelines" / "seeds" / "red-team.jsonl").read_text().splitlines()))
    template = load_template("respond", REPO / "prompts")
    convs = [[{"role": "user", "content": template.render(prompt=c[0]["content"])}] for c in prompts(count)]
    tok, model = teacher.tokenizer, teacher.model
    started, plain_tokens = time.perf_counter(), 0
    with torch.inference_mode():
        for start in range(0, count, size):
            rows = [teacher.encode_chat(c) for c in convs[start : start + size]]
            ids, mask = teacher._left_pad(rows)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=args.max_new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=sorted(teacher.eos_ids),
            )
            for row in out[:, ids.shape[1] :].tolist():
                end = next((i for i, t in enumerate(row) if t in teacher.eos_ids), None)
                plain_tokens += len(row) if end is None else end + 1
    plain = plain_tokens / (time.perf_counter() - started)
    seeds = REPO / "pipelines" / "seeds" / "red-team.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Path(tmp) / "overhead.yaml"
        pipeline.write_text(
            json.dumps(
                {
                    "name": "overhead",
                    "seed": 0,
                    "teacher": {"model": args.teacher, "batch_size": size},
                    "seeds": {"path": str(seeds)},
                    "paths": {"prompts": str(REPO / "prompts"), "constitutions": str(REPO / "constitutions")},
                    "stages": [{"respond": {"sampling": {"temperature": 0.0, "max_new_tokens": args.max_new_tokens}}}],
                }
            )
        )
        spec = load_pipeline(pipeline)
        started = time.perf_counter()
        result = run_pipeline(
            spec, RunOptions(out_dir=Path(tmp) / "out", limit=count), teacher=teacher, log=lambda _: None
        )
        ours_tokens = result.manifest["usage"]["completion_tokens"]
        ours = ours_tokens / (time.perf_counter() - started)
    print(f"plain model.generate loop, batch {size}: {plain_tokens} tokens, {plain:.1f} tok/s")
    print(
        f"respond stage through synthforge generate, batch {size}: {ours_tokens} tokens, {ours:.1f} tok/s "
        f"= {ours / plain:.2f}x the plain loop (target >= 1.0x)"
    )


def serve_batching(teacher, args) -> None:
    """8 clients, each sending one request at a time to `synthforge serve`, vs in-process at batch 16."""
    from tests.fault_server import serve_process

    convs = prompts(args.prompts)
    params = [SamplingParams(temperature=0.7, max_new_tokens=args.max_new_tokens, seed=i) for i in range(len(convs))]
    rates = {}
    for size in (16, args.clients):  # batch 16: the target's baseline; batch = clients: what 8 in flight allow
        teacher.batch_size = size
        started = time.perf_counter()
        out = teacher.generate(convs, params)
        local_tokens = sum(c.completion_tokens for group in out for c in group)
        rates[size] = local_tokens / (time.perf_counter() - started)
    local = rates[16]
    del teacher.model  # free the in-process copy's memory before the server loads its own
    serve_args = ["--teacher", args.teacher, "--batch-size", "16", "--model-name", "bench"]
    with serve_process(serve_args, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)}) as url:
        todo, lock, served_tokens = list(range(len(convs))), threading.Lock(), [0]

        def client() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop(0)
                body = {
                    "model": "bench",
                    "messages": convs[i],
                    "temperature": 0.7,
                    "top_p": 0.95,
                    "max_tokens": args.max_new_tokens,
                    "seed": i,
                }
                request = urllib.request.Request(
                    f"{url}/chat/completions",
                    data=json.dumps(body).encode(),
                    headers={"content-type": "application/json"},
                )
                answer = json.loads(urllib.request.urlopen(request, timeout=600).read())
                with lock:
                    served_tokens[0] += answer["usage"]["completion_tokens"]

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        served = served_tokens[0] / (time.perf_counter() - started)
    print(f"in-process, batch 16: {local_tokens} tokens, {local:.1f} tok/s")
    print(f"in-process, batch {args.clients} (the rows the clients keep in flight): {rates[args.clients]:.1f} tok/s")
    print(
        f"synthforge serve, {args.clients} concurrent clients one request at a time: {served_tokens[0]} tokens, "
        f"{served:.1f} tok/s = {served / local:.2f}x in-process batch 16 (target >= 0.8x), "
        f"{served / rates[args.clients]:.2f}x in-process batch {args.clients}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["batch", "overhead", "serve"], default="batch")
    parser.add_argument("--teacher", default="embedded")
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--batch", type=int, default=16, help="batch size of --mode overhead")
    parser.add_argument("--prompts", type=int, default=64, help="prompts of --mode overhead / serve")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of --mode serve")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    resolve_model(args.teacher)  # converts a GGUF teacher once, outside the timing
    started = time.perf_counter()
    teacher = load_teacher(args.teacher, device=args.device)
    print(f"teacher start (cached weights): {time.perf_counter() - started:.2f} s  [{teacher.identity}]")
    if args.mode == "overhead":
        return overhead(teacher, args)
    if args.mode == "serve":
        return serve_batching(teacher, args)
    # min_new_tokens is not used: every row samples until EOS or the limit, as in real runs.
    params = SamplingParams(temperature=0.7, max_new_tokens=args.max_new_tokens, seed=0)
    baseline = None
    for size in (int(s) for s in args.batch_sizes.split(",")):
        teacher.batch_size = size
        convs = prompts(max(size, 8))
        teacher.generate(convs[:1], params.with_seed(99))  # warm-up
        started = time.perf_counter()
        out = teacher.generate(convs, [params.with_seed(i) for i in range(len(convs))])
        seconds = time.perf_counter() - started
        tokens = sum(c.completion_tokens for group in out for c in group)
        rate = tokens / seconds
        baseline = baseline or rate
        print(
            f"batch {size:>3}: {len(convs):>3} prompts, {tokens:>5} tokens in {seconds:6.1f} s = "
            f"{rate:7.1f} tok/s  ({rate / baseline:.1f}x batch {args.batch_sizes.split(',')[0]})"
        )


if __name__ == "__main__":
    main()
