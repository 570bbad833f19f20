"""The Ray executor on a local 2-CPU Ray instance: teacher replicas as actors, the driver the only writer."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip(
    "ray", reason="Ray is an optional extra (make test installs it): pip install 'synthforge[ray]'"
)

from synthforge.engine.runner import RunOptions, run_pipeline  # noqa: E402
from synthforge.engine.spec import load_pipeline  # noqa: E402
from synthforge.errors import TokenBudgetSpent  # noqa: E402
from tests.conftest import write_pipeline  # noqa: E402

RAY = ["engine.kind=ray", "engine.replicas=2", "engine.num_cpus=1", "teacher.device=cpu"]
FILES = ("sft.jsonl", "dpo.jsonl", "trace.jsonl", "dropped.jsonl")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)  # GPUs: only declared
    yield
    ray.shutdown()


def _run(path, out, overrides=(), **options):
    return run_pipeline(
        load_pipeline(path, list(overrides)), RunOptions(out_dir=out, limit=8, **options), log=lambda _: None
    )


def test_two_replicas_one_killed_mid_run_give_byte_identical_records_to_the_local_engine(
    project, tiny_model_dir, monkeypatch
):
    """Byte-identical to the local engine, although an actor is killed mid-run (its batch is re-queued on a
    fresh actor): nothing lost, nothing duplicated."""
    from synthforge.engine.ray_executor import RayExecutor

    killed: list[int] = []

    def kill_once(self, actor, number):
        if not killed:
            killed.append(number)
            ray.kill(next(a for a in self.actors if a is not actor))  # the other one, busy with a batch

    monkeypatch.setattr(RayExecutor, "completed", kill_once)
    path = write_pipeline(project, tiny_model_dir)
    remote = _run(path, project / "ray", [*RAY, "engine.chunk_size=2"])
    local = _run(path, project / "local", ["teacher.device=cpu", "engine.chunk_size=2"])
    for name in FILES:
        assert (local.out_dir / name).read_bytes() == (remote.out_dir / name).read_bytes(), name
    assert killed and remote.manifest["engine"]["actor_restarts"] >= 1
    assert remote.manifest["engine"]["kind"] == "ray" and remote.manifest["engine"]["replicas"] == 2
    assert local.manifest["engine"] == {"kind": "local"}


def test_each_replica_runs_torch_on_its_own_cpus_and_a_multi_gpu_vllm_replica_gets_a_placement_group(
    tiny_model_dir,
):
    """Two processes each running torch with default threads on 2 cores run ~6x slower each: an actor sizes
    torch's threads to its CPUs (the timing itself is benchmarks/ray_generate.py). A vLLM replica over 2 GPUs
    (tensor parallel) runs in a placement group of 2 GPU bundles with vLLM's Ray executor (Ray's GPUs are only
    declared here; vLLM is not built: the replica loads its teacher on first use)."""
    from synthforge.engine.ray_executor import RayExecutor, RayResources
    from synthforge.teachers.backends.vllm import VLLMSettings
    from synthforge.teachers.config import TeacherSpec
    from synthforge.teachers.factory import teacher_identity

    executor = RayExecutor(TeacherSpec(model=str(tiny_model_dir), device="cpu"), RayResources(replicas=2, num_cpus=1))
    try:
        assert executor.workers() == 2  # no replica started yet
        replicas = ray.get([actor.describe.remote() for actor in executor.start()])
        assert executor.workers() == 0  # the replicas hold both CPUs: dedup would run on the driver
    finally:
        executor.close()
    assert [r["threads"] for r in replicas] == [1, 1] and len({r["pid"] for r in replicas}) == 2
    assert [r["bundles"] for r in replicas] == [0, 0]
    spec = TeacherSpec(backend="vllm", model="org/big-model", options=VLLMSettings(tensor_parallel_size=2))
    executor = RayExecutor(spec, RayResources(replicas=1, num_cpus=1))
    try:
        replica = ray.get(executor.start()[0].describe.remote())
        assert executor.describe()["devices_per_replica"] == 2
    finally:
        executor.close()
    assert replica["bundles"] == 2
    assert replica["spec"].options.extra == {"distributed_executor_backend": "ray"}
    assert teacher_identity(replica["spec"]) == teacher_identity(spec)  # same cache keys as a local vLLM run
    assert not executor.groups


def test_a_run_stopped_under_ray_resumes_locally_to_the_same_output(project, tiny_model_dir):
    path = write_pipeline(project, tiny_model_dir)
    with pytest.raises(TokenBudgetSpent):
        _run(path, project / "o", RAY, max_tokens=300)  # stops after the first batches are committed
    resumed = _run(path, project / "o", ["teacher.device=cpu"])
    assert resumed.reports[0].reused > 0  # what the Ray actors finished was not asked again
    fresh = _run(path, project / "fresh", ["teacher.device=cpu"])
    for name in FILES:
        assert (resumed.out_dir / name).read_bytes() == (fresh.out_dir / name).read_bytes(), name


def test_a_teacher_object_cannot_be_sent_to_ray(project, tiny_model_dir, tiny_teacher):
    from synthforge.errors import UserError

    path = write_pipeline(project, tiny_model_dir)
    with pytest.raises(UserError, match="builds its teacher replicas"):
        run_pipeline(
            load_pipeline(path, RAY),
            RunOptions(out_dir=project / "o", limit=2),
            teacher=tiny_teacher,
            log=lambda _: None,
        )


def test_ray_dedup_equals_local_dedup_on_20k_documents_with_transitive_clusters():
    import numpy as np

    from synthforge.dedup.near_duplicates import DedupSettings, find_clusters
    from synthforge.dedup.ray_dedup import cluster_blocks, find_clusters_ray, text_block
    from synthforge.testing import near_duplicate_corpus

    docs, _ = near_duplicate_corpus(20_000, seed=5, words=40)
    base = [f"chainword{i}" for i in range(100)]
    middle = list(base)
    middle[90] = "zzzzzz"  # Jaccard(base, middle) = 0.90 (5-word shingles)
    end = list(middle)
    end[10] = "yyyyyy"  # Jaccard(middle, end) = 0.90, Jaccard(base, end) = 0.81 < 0.85
    docs += [" ".join(base), " ".join(middle), " ".join(end)]
    for verify in ("signature", "exact"):
        settings = DedupSettings(threshold=0.85, num_perm=128, verify=verify)
        local = find_clusters(docs, settings)
        remote = find_clusters_ray(docs, settings, workers=2, chunk=4_000)
        assert np.array_equal(local.labels, remote.labels)
        assert np.array_equal(local.left, remote.left) and np.array_equal(local.right, remote.right)
        assert np.array_equal(local.similarity, remote.similarity)
        # Past the edge limit the components are joined by distributed label propagation: same labels.
        blocks = [ray.remote(text_block).remote(docs[s : s + 3_000], s, settings) for s in range(0, len(docs), 3_000)]
        labels, edges = cluster_blocks(blocks, np.zeros(1, np.int64), len(docs), settings, parts=3, edge_limit=0)
        assert edges is None and np.array_equal(labels, local.labels)
        assert len(set(local.labels.tolist())) < len(docs) - 300  # hundreds of planted duplicates found
    assert local.labels[-1] == local.labels[-2] == local.labels[-3]  # the transitive chain is one cluster
    assert (len(docs) - 3, len(docs) - 1) not in set(zip(local.left.tolist(), local.right.tolist(), strict=True))


def _corpus_files(root, n_docs=12_000):
    """A corpus split over three JSONL files and a parquet file, with planted near-duplicates across them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synthforge.testing import near_duplicate_corpus

    docs, _ = near_duplicate_corpus(n_docs, seed=7, words=40)
    rows = [{"prompt": d, "confidence": (i % 7) / 7, "n": i} for i, d in enumerate(docs)]
    root.mkdir()
    quarter = n_docs // 4
    for k in range(3):
        lines = "".join(json.dumps(r) + "\n" for r in rows[k * quarter : (k + 1) * quarter])
        (root / f"part{k}.jsonl").write_text(lines if k != 1 else "\n" + lines)  # a blank line: rows != lines
    pq.write_table(pa.Table.from_pylist(rows[3 * quarter :]), root / "z.parquet")
    return rows


def test_ray_file_dedup_streams_blocks_and_writes_what_the_local_engine_writes(tmp_path):
    """JSONL and parquet read by Ray Data in blocks; kept rows written as shards whose concatenation (in name
    order) is the local engine's output byte for byte, also with distributed components (edge limit 0)."""
    from synthforge.dedup.local_files import dedup_files
    from synthforge.dedup.near_duplicates import DedupSettings
    from synthforge.dedup.ray_files import dedup_files_ray
    from synthforge.rows import data_files

    rows = _corpus_files(tmp_path / "in")
    inputs = data_files(tmp_path / "in")
    assert [p.name for p in inputs] == ["part0.jsonl", "part1.jsonl", "part2.jsonl", "z.parquet"]
    settings = DedupSettings(threshold=0.85)
    local = dedup_files(inputs, tmp_path / "local.jsonl", settings, keep="confidence")
    assert 0 < local.dropped < len(rows) // 5
    remote = dedup_files_ray(inputs, tmp_path / "ray.jsonl", settings, keep="confidence", rows_per_block=1_000)
    for name in ("{}.jsonl", "{}.dropped.jsonl"):
        assert (tmp_path / name.format("ray")).read_bytes() == (tmp_path / name.format("local")).read_bytes()
    assert (remote.kept, remote.dropped, remote.clusters) == (local.kept, local.dropped, local.clusters)
    shards = dedup_files_ray(
        inputs, tmp_path / "shards", settings, keep="confidence", rows_per_block=1_000, edge_limit=0
    )
    parts = sorted((tmp_path / "shards").glob("part-*.jsonl"))
    assert len(parts) >= 4 and shards.kept == local.kept
    assert b"".join(p.read_bytes() for p in parts) == (tmp_path / "local.jsonl").read_bytes()
    dropped = b"".join(p.read_bytes() for p in sorted((tmp_path / "shards.dropped").glob("part-*.jsonl")))
    assert dropped == (tmp_path / "local.dropped.jsonl").read_bytes()
    provenance = json.loads((tmp_path / "shards" / ".synthforge-dedup.json").read_text())
    assert provenance["engine"]["kind"] == "ray" and provenance["counts"]["kept"] == local.kept
    assert not list(tmp_path.glob(".*partial*"))  # the staging directories are gone


def test_ray_file_dedup_cli_bad_row_is_one_line_and_writes_nothing(tmp_path, capsys):
    from synthforge.cli.main import main

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"prompt": "a b c d e f g"}\n{"prompt": "a b c d e f g"}\n')
    (tmp_path / "in" / "b.jsonl").write_text('{"prompt": "x y z"}\n\n{"nope": 1}\n')
    with pytest.raises(SystemExit) as info:
        main(["dedup", str(tmp_path / "in"), "--engine", "ray", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1, err
    assert "b.jsonl:3: row 2 has no prompt" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    (tmp_path / "in" / "b.jsonl").write_text('{"prompt": "x y z"}\n')
    for _ in range(2):  # a rerun replaces its own earlier output
        with pytest.raises(SystemExit) as info:
            main(["dedup", str(tmp_path / "in"), "--engine", "ray", "--out", str(tmp_path / "out")])
        assert info.value.code == 0
    assert "3 rows → 2 kept, 1 near-duplicates dropped" in capsys.readouterr().out
    from datasets import load_dataset

    assert load_dataset("json", data_dir=str(tmp_path / "out"))["train"]["prompt"] == ["a b c d e f g", "x y z"]


def test_minhash_dedup_stage_under_engine_ray_clusters_on_ray_with_the_same_result(project, monkeypatch):
    """A whole-dataset stage with a distributed form uses the CPUs the replicas don't hold (here all: no
    per-record stage started them); same records, same cache."""
    from synthforge.dedup import ray_dedup
    from tests.dedup.test_dedup import _dup_seeds

    calls: list[int] = []
    original = ray_dedup.find_clusters_ray

    def counted(texts, settings, workers=2, **kwargs):
        calls.append(workers)
        return original(texts, settings, workers, **kwargs)

    monkeypatch.setattr(ray_dedup, "find_clusters_ray", counted)
    pipeline = _dup_seeds(project)
    local = run_pipeline(load_pipeline(pipeline), RunOptions(out_dir=project / "local"), log=lambda _: None)
    remote = run_pipeline(
        load_pipeline(pipeline, ["engine.kind=ray", "engine.replicas=2"]),
        RunOptions(out_dir=project / "ray"),
        log=lambda _: None,
    )
    assert calls == [2]
    for name in FILES:
        assert (local.out_dir / name).read_bytes() == (remote.out_dir / name).read_bytes(), name
    again = run_pipeline(load_pipeline(pipeline), RunOptions(out_dir=project / "ray"), log=lambda _: None)
    assert again.reports[0].computed == 0  # the local engine reuses what Ray made


def test_a_file_missing_on_a_workers_node_is_one_line_naming_the_node(project, tiny_model_dir):
    """Actors rebuild each stage from its plain data; a pipeline file absent on that node (every node needs
    the pipeline's files at the same paths) is a user error, not a Ray deserialization traceback."""
    import dataclasses

    from synthforge.engine.prepare import prepare
    from synthforge.engine.ray_executor import RayExecutor, RayResources
    from synthforge.errors import UserError
    from synthforge.records import Record

    spec = load_pipeline(write_pipeline(project, tiny_model_dir), ["teacher.device=cpu"])
    stage = prepare(spec, limit=2).stages[0]
    stage.resources = dataclasses.replace(stage.resources, prompts_dir=project / "not-on-this-node")
    stage.settings = {**stage.settings, "template": "only-in-this-project"}  # no built-in template of that name
    executor = RayExecutor(spec.teacher, RayResources(replicas=1, num_cpus=1))
    try:
        with pytest.raises(
            UserError, match=r"^on Ray node .+: prompt template 'only-in-this-project' not found"
        ) as info:
            list(executor.run(stage, [[Record(id="a", prompt="hi")]], None, 0))
    finally:
        executor.close()
    assert "\n" not in str(info.value)


def test_init_ray_joins_the_cluster_at_ray_address():
    """With RAY_ADDRESS set, a fresh process joins that cluster instead of starting its own."""
    import os
    import subprocess
    import sys

    address = ray.get_runtime_context().gcs_address
    code = (
        "import ray; from synthforge.ray_support import init_ray; init_ray(1); "
        "print(ray.get_runtime_context().gcs_address, ray.cluster_resources()['CPU'])"
    )
    env = {**os.environ, "RAY_ADDRESS": address}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == [address, "2.0"]  # the test's 2-CPU instance, not a new 1-CPU one


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_bad_files_in_a_dedup_folder_are_one_line_and_write_nothing(tmp_path, capsys, engine):
    from synthforge.cli.main import main

    cases = {
        "binary": (
            b'{"text": "ok fine"}\n{"text": "bad \xff byte"}\n',
            "x.jsonl",
            "x.jsonl:2: JSONL file is not UTF-8",
        ),
        "parquet": (b"garbage", "y.parquet", "y.parquet: not a readable parquet file"),
        "empty": (b"", "empty.jsonl", "empty.jsonl: no rows to deduplicate"),
    }
    for name, (content, filename, message) in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / filename).write_bytes(content)
        with pytest.raises(SystemExit) as info:
            main(["dedup", str(tmp_path / name), "--engine", engine, "--out", str(tmp_path / f"{name}-out")])
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(cases)  # no output, no staging left behind
