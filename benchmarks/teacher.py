"""Teacher throughput: generated tokens/s at batch sizes > 1 as a ratio to batch 1, same process, same prompts.

    python benchmarks/teacher.py                       # embedded SmolLM2-135M on this machine
    python benchmarks/teacher.py --teacher DIR --batch-sizes 1,16,64 --device cuda
    python benchmarks/teacher.py --mode overhead       # respond stage via the engine vs a plain generate loop
    python benchmarks/teacher.py --mode decoder        # continuous batching vs model.generate; 1 vs 2 lanes
    python benchmarks/teacher.py --mode serve          # clients through `synthforge serve` vs `transformers serve
                                                       # --continuous-batching` and vs in-process, same run
    python benchmarks/teacher.py --mode kernels        # Linear weights prepacked for oneDNN vs torch's matmul

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

from synthforge.builtin import ROOT as BUILTIN  # noqa: E402
from synthforge.models import pad, resolve_model  # noqa: E402
from synthforge.teachers.backends.transformers import TransformersSettings, load_teacher  # noqa: E402
from synthforge.teachers.base import SamplingParams  # noqa: E402


def prompts(count: int) -> list[list[dict[str, str]]]:
    lines = (BUILTIN / "pipelines" / "seeds" / "red-team.jsonl").read_text().splitlines()
    texts = [json.loads(line)["prompt"] for line in lines if line]
    return [[{"role": "user", "content": texts[i % len(texts)]}] for i in range(count)]


def overhead(args) -> None:
    """The ``respond`` stage through the engine (checkpoints, trace, export) against two baselines on the same
    teacher, the same 56 prompts, batch size and token budget, greedy (all three make the same tokens):
    a plain static ``model.generate`` loop on the same model, and the teacher's own ``generate`` called on the
    same batches without the engine. Same lanes on every side (one, with all of torch's threads: the one lane
    ``model.generate`` has), and every side runs one warm-up batch before its timing."""
    import torch

    from synthforge.engine.runner import RunOptions, run_pipeline
    from synthforge.engine.spec import load_pipeline
    from synthforge.prompts import load_template
    from synthforge.teachers.factory import LazyTeacher

    size, seeds = args.batch, BUILTIN / "pipelines" / "seeds" / "red-team.jsonl"
    count = min(args.prompts, len(seeds.read_text().splitlines()))
    template = load_template("respond", BUILTIN / "prompts")
    convs = [[{"role": "user", "content": template.render(prompt=c[0]["content"])}] for c in prompts(count)]
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Path(tmp) / "overhead.yaml"
        teacher_keys = {"model": args.teacher, "batch_size": size, "transformers": {"lanes": 1}}
        pipeline.write_text(
            json.dumps(
                {
                    "name": "overhead",
                    "seed": 0,
                    "teacher": teacher_keys,
                    "seeds": {"path": str(seeds)},
                    "paths": {"prompts": str(BUILTIN / "prompts"), "constitutions": str(BUILTIN / "constitutions")},
                    "stages": [{"respond": {"sampling": {"temperature": 0.0, "max_new_tokens": args.max_new_tokens}}}],
                }
            )
        )
        spec = load_pipeline(pipeline)
        teacher = LazyTeacher(spec.teacher)  # the teacher `synthforge generate` builds, loaded before any timing
        print(f"teacher: {teacher.identity['name']}, {teacher.decoder.lanes} lane, {torch.get_num_threads()} threads")
        plain, plain_tokens = _plain_loop(teacher, convs, size, args.max_new_tokens)
        params = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens, seed=0)
        teacher.generate(convs[:size], params)  # warm-up: the decoder's first batch
        started, direct_tokens = time.perf_counter(), 0
        for start in range(0, count, size):
            out = teacher.generate(convs[start : start + size], params)
            direct_tokens += sum(c.completion_tokens for group in out for c in group)
        direct = direct_tokens / (time.perf_counter() - started)
        started = time.perf_counter()
        options = RunOptions(out_dir=Path(tmp) / "out", limit=count)
        result = run_pipeline(spec, options, teacher=teacher, log=lambda _: None)
        ours_tokens = result.manifest["usage"]["completion_tokens"]
        ours = ours_tokens / (time.perf_counter() - started)
        teacher.close()
    print(f"plain model.generate loop, batch {size}, 1 lane: {plain_tokens} tokens, {plain:.1f} tok/s")
    print(f"the teacher's generate on the same batches, no engine, 1 lane: {direct_tokens} tokens, {direct:.1f} tok/s")
    print(
        f"respond stage through synthforge generate, batch {size}, 1 lane: {ours_tokens} tokens, {ours:.1f} tok/s "
        f"= {ours / direct:.2f}x the teacher without the engine (the engine's overhead), "
        f"{ours / plain:.2f}x the plain loop (target >= 1.0x)"
    )


def _plain_loop(teacher, convs, size: int, max_new_tokens: int) -> tuple[float, int]:
    """Static batches through ``model.generate`` on the teacher's own model, after one warm-up batch."""
    import torch

    tok, model = teacher.tokenizer, teacher.model

    def batch(rows_convs) -> int:
        rows = [teacher.encode_chat(c) for c in rows_convs]
        ids, mask = pad(rows, tok.pad_token_id, left=True)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=sorted(teacher.eos_ids),
        )
        made = 0
        for row in out[:, ids.shape[1] :].tolist():
            end = next((i for i, t in enumerate(row) if t in teacher.eos_ids), None)
            made += len(row) if end is None else end + 1
        return made

    with torch.inference_mode():
        batch(convs[:size])  # warm-up
        started, tokens = time.perf_counter(), 0
        for start in range(0, len(convs), size):
            tokens += batch(convs[start : start + size])
    return tokens / (time.perf_counter() - started), tokens


def _rate(teacher, convs, params) -> tuple[float, int]:
    started = time.perf_counter()
    out = teacher.generate(convs, params)
    tokens = sum(c.completion_tokens for group in out for c in group)
    return tokens / (time.perf_counter() - started), tokens


def decoder(teacher, args) -> None:
    """Continuous batching (rows leave when they end, waiting rows take their place) against static batches
    through ``model.generate``, same prompts, seeds and batch size, same process; then 2 lanes of 1 thread."""
    import torch

    convs = prompts(args.prompts)
    params = [SamplingParams(temperature=0.7, max_new_tokens=args.max_new_tokens, seed=i) for i in range(len(convs))]
    teacher.batch_size = args.batch
    continuous_decoder, teacher.decoder = teacher.decoder, None
    static, tokens = _rate(teacher, convs, params)
    static_texts = [c[0].text for c in teacher.generate(convs[:8], params[:8])]
    teacher.decoder = continuous_decoder
    teacher.decoder.max_batch = args.batch
    continuous, cb_tokens = _rate(teacher, convs, params)
    same = static_texts == [c[0].text for c in teacher.generate(convs[:8], params[:8])]
    print(f"static batches (model.generate), batch {args.batch}: {tokens} tokens, {static:.1f} tok/s")
    print(
        f"continuous batching, batch {args.batch}: {cb_tokens} tokens, {continuous:.1f} tok/s = "
        f"{continuous / static:.2f}x static (same texts: {same})"
    )
    threads = torch.get_num_threads()
    for lanes in (2,):
        from synthforge.teachers.decoding import Decoder

        torch.set_num_threads(max(1, threads // lanes))
        teacher.decoder = Decoder(
            teacher.model,
            teacher.tokenizer.pad_token_id,
            teacher.eos_ids,
            teacher._sample,
            teacher._stopped,
            args.batch,
            lanes,
        )
        laned, _ = _rate(teacher, convs, params)
        print(
            f"continuous batching, {lanes} lanes x {torch.get_num_threads()} thread(s), batch {args.batch} each: "
            f"{laned:.1f} tok/s = {laned / continuous:.2f}x one lane of {threads} threads"
        )
        teacher.decoder.close()
    torch.set_num_threads(threads)


def _clients(url: str, model: str, convs, args, count: int) -> tuple[float, int]:
    """``count`` clients, each sending one request at a time until all prompts are answered: (tok/s, tokens)."""

    def ask(i: int) -> int:
        body = {
            "model": model,
            "messages": convs[i],
            "temperature": 0.7,
            "top_p": 0.95,
            "max_tokens": args.max_new_tokens,
            "seed": i,
        }
        request = urllib.request.Request(
            f"{url}/chat/completions", data=json.dumps(body).encode(), headers={"content-type": "application/json"}
        )
        return json.loads(urllib.request.urlopen(request, timeout=600).read())["usage"]["completion_tokens"]

    return _one_at_a_time(ask, len(convs), count)


def _one_at_a_time(ask, requests: int, count: int) -> tuple[float, int]:
    """``count`` threads, each asking ``ask(i)`` (tokens made) for the next request until all are answered:
    (tok/s, tokens)."""
    todo, lock, served = list(range(requests)), threading.Lock(), [0]

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop(0)
            tokens = ask(i)
            with lock:
                served[0] += tokens

    threads = [threading.Thread(target=client) for _ in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return served[0] / (time.perf_counter() - started), served[0]


def _transformers_serve(model_dir: str):
    """`transformers serve MODEL_DIR --continuous-batching` on a free port (the baseline we did not write)."""
    import contextlib
    import shutil
    import subprocess

    from tests.fault_server import _answers, free_port

    @contextlib.contextmanager
    def running():
        binary = Path(sys.executable).with_name("transformers")
        binary = binary if binary.exists() else Path(shutil.which("transformers") or "transformers")
        port = free_port()
        command = [
            str(binary),
            "serve",
            model_dir,
            "--continuous-batching",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + 300
            while not _answers(f"{url}/models"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("transformers serve did not start (pip install 'transformers[serving]')")
                time.sleep(0.3)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)

    return running()


def serve_batching(teacher, args) -> None:
    """Clients (8, then 32), each sending one request at a time, through `synthforge serve` and through
    `transformers serve --continuous-batching` on the same model and prompts, each server alone on the machine;
    and in-process at batch 8 (what 8 clients keep in flight): all requests queued at once, and from 8 threads
    asking one at a time as the clients do."""
    from tests.fault_server import serve_process

    convs = prompts(32)
    params = [SamplingParams(temperature=0.7, max_new_tokens=args.max_new_tokens, seed=i) for i in range(len(convs))]
    teacher.decoder.max_batch = max(1, 8 // teacher.decoder.lanes)  # 8 rows in flight in all, as 8 clients keep
    local8, _ = _rate(teacher, convs, params)
    threads8, _ = _one_at_a_time(lambda i: teacher.generate([convs[i]], params[i])[0][0].completion_tokens, 32, 8)
    model_dir = str(resolve_model(args.teacher)[2])
    teacher.close()
    del teacher.model  # free the in-process copy's memory before the servers load theirs
    counts = [int(c) for c in args.client_counts.split(",")]
    ours, theirs = {}, {}
    serve_args = ["--teacher", args.teacher, "--batch-size", str(max(counts)), "--model-name", "bench"]
    with serve_process(serve_args, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)}) as url:
        for count in counts:
            ours[count] = _clients(url, "bench", prompts(4 * count), args, count)  # 4 requests per client
    with _transformers_serve(model_dir) as url:
        for count in counts:
            theirs[count] = _clients(url, model_dir, prompts(4 * count), args, count)
    print(
        f"in-process, continuous batching, 8 rows in flight ({teacher.decoder.lanes} lanes): {local8:.1f} tok/s "
        f"with all 32 requests queued at once; {threads8:.1f} tok/s from 8 threads asking one at a time, as the "
        "clients do"
    )
    for count in counts:
        rate, tokens = ours[count]
        base, base_tokens = theirs[count]
        print(
            f"{count} clients: synthforge serve {rate:.1f} tok/s ({tokens} tokens); transformers serve "
            f"--continuous-batching {base:.1f} tok/s ({base_tokens} tokens) = {rate / base:.2f}x (target >= 1.2x)"
            + (
                f"; {rate / local8:.2f}x in-process batch 8 (target >= 1.0x), {rate / threads8:.2f}x in-process "
                "from 8 threads"
                if count == 8
                else ""
            )
        )


def kernels(args) -> None:
    """The same teacher (lanes as the defaults choose) with torch's default matmul, then with Linear weights
    prepacked for oneDNN: tokens/s over the same prompts and seeds, 16 rows in flight per lane; and whether a
    row's next-token logits computed alone equal those computed beside 4 other rows (one decoding step)."""
    import torch

    convs = prompts(args.prompts)
    params = [SamplingParams(temperature=0.7, max_new_tokens=args.max_new_tokens, seed=i) for i in range(len(convs))]
    rates, threads = {}, torch.get_num_threads()
    for packed in (False, True):
        torch.set_num_threads(threads)  # loading set each lane's share
        teacher = load_teacher(args.teacher, device=args.device, settings=TransformersSettings(packed_weights=packed))
        ids = torch.tensor([[teacher.tokenizer(c[0]["content"]).input_ids[0]] for c in convs[:5]])
        with torch.inference_mode():
            together = teacher.model(input_ids=ids).logits
            alone = [teacher.model(input_ids=ids[k : k + 1]).logits[0] for k in range(5)]
        same = all(torch.equal(together[k], alone[k]) for k in range(5))
        teacher.generate(convs[:1], params[0].with_seed(99))  # warm-up
        rates[packed], tokens = _rate(teacher, convs, params)
        name = "prepacked oneDNN weights" if packed else "torch's default matmul"
        print(
            f"{name}: {rates[packed]:.1f} tok/s ({tokens} tokens, {teacher.decoder.lanes} lanes); a row's logits "
            f"alone {'equal' if same else 'differ from'} its logits beside 4 others"
        )
        teacher.close()
    print(f"prepacked / default: {rates[True] / rates[False]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["batch", "overhead", "decoder", "serve", "kernels"], default="batch")
    parser.add_argument("--teacher", default="embedded")
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--batch", type=int, default=16, help="batch size of --mode overhead")
    parser.add_argument("--prompts", type=int, default=64, help="prompts of --mode overhead / serve")
    parser.add_argument("--client-counts", default="8,32", help="concurrent clients of --mode serve")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    resolve_model(args.teacher)  # converts a GGUF teacher once, outside the timing
    if args.mode == "kernels":
        return kernels(args)
    if args.mode == "overhead":
        return overhead(args)
    started = time.perf_counter()
    # serve: the in-process teacher as a pipeline gets it (lanes as the defaults choose), like the server's
    settings = TransformersSettings() if args.mode == "serve" else None
    teacher = load_teacher(args.teacher, device=args.device, settings=settings)
    print(f"teacher start (cached weights): {time.perf_counter() - started:.2f} s  [{teacher.identity}]")
    try:
        if args.mode == "serve":
            serve_batching(teacher, args)
        elif args.mode == "decoder":
            decoder(teacher, args)
        else:
            batch_sizes(teacher, args)
    finally:
        teacher.close()  # the lanes' threads joined: a thread still inside torch at exit aborts the process


def batch_sizes(teacher, args) -> None:
    """Tokens/s at each batch size as a ratio to the first, one lane, after a warm-up request at each size."""
    # min_new_tokens is not used: every row samples until EOS or the limit, as in real runs.
    params = SamplingParams(temperature=0.7, max_new_tokens=args.max_new_tokens, seed=0)
    baseline = None
    for size in (int(s) for s in args.batch_sizes.split(",")):
        teacher.batch_size = size
        if teacher.decoder is not None:
            teacher.decoder.max_batch = size
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
