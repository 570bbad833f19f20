"""The Ray executor on a local 2-CPU Ray instance: teacher replicas as actors, the driver the only writer."""

from __future__ import annotations

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
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
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
    from synthforge.dedup.ray_dedup import find_clusters_ray
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
        assert len(set(local.labels.tolist())) < len(docs) - 300  # hundreds of planted duplicates found
    assert local.labels[-1] == local.labels[-2] == local.labels[-3]  # the transitive chain is one cluster
    assert (len(docs) - 3, len(docs) - 1) not in set(zip(local.left.tolist(), local.right.tolist(), strict=True))
