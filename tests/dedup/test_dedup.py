"""MinHash dedup: datasketch equivalence, LSH parameters, global transitive clusters, stage and CLI."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH

from synthforge.cli.main import main
from synthforge.dedup.lsh import band_params, components
from synthforge.dedup.minhash import MinHasher
from synthforge.dedup.near_duplicates import DedupSettings, find_clusters, keep_scores, representatives
from synthforge.dedup.shingles import ShingleHasher, Shingling, shingle_hasher, shingles
from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline

TEXTS = [
    "The quick brown fox jumps over the lazy dog, again and again.",
    "hi there",
    "",
    "Naïve café — 東京 tower! Emoji 🙂 and tabs\tand\nnew lines, all normalised.",
    "a",
]


def _words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice("abcdefghij") for _ in range(6)) for _ in range(n)]


@pytest.mark.parametrize(("unit", "ngram"), [("word", 5), ("word", 1), ("char", 4)])
def test_signatures_equal_datasketch_with_our_shingle_hash(unit, ngram):
    shingling = Shingling(ngram, unit)
    hashes, offsets = ShingleHasher(shingling).hash_texts(TEXTS)
    minhasher = MinHasher(num_perm=64, seed=3)
    ours = minhasher.signatures(hashes, offsets)
    for i, text in enumerate(TEXTS):
        reference = MinHash(num_perm=64, seed=3, hashfunc=shingle_hasher(unit))
        reference.update_batch([s.encode("utf-8") for s in shingles(text, shingling)])
        assert np.array_equal(ours[i], reference.hashvalues), text
        assert LeanMinHash(reference) == minhasher.lean(ours[i])


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_band_parameters_are_datasketchs(threshold, num_perm):
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert band_params(threshold, num_perm) == (lsh.b, lsh.r)
    assert DedupSettings(threshold=threshold, num_perm=num_perm, verify="none").bands() == (lsh.b, lsh.r)


def test_transitive_chain_is_one_cluster_though_its_ends_are_below_threshold():
    rng = random.Random(0)
    a = _words(rng, 100)
    b = list(a)
    b[90] = "zzzzzz"  # one word changed: 5 of 96 shingles differ, Jaccard(a, b) = 91/101 = 0.90
    c = list(b)
    c[10] = "yyyyyy"  # Jaccard(b, c) = 0.90, Jaccard(a, c) = 86/106 = 0.81 < 0.85
    others = [" ".join(_words(rng, 100)) for _ in range(50)]
    texts = [" ".join(a), *others[:25], " ".join(b), *others[25:], " ".join(c)]
    settings = DedupSettings(threshold=0.85, num_perm=256, verify="exact")
    clusters = find_clusters(texts, settings)
    chain = [0, 26, 52]
    assert len({clusters.labels[i] for i in chain}) == 1
    assert not any(clusters.labels[i] == clusters.labels[0] for i in range(len(texts)) if i not in chain)
    pairs = {(int(x), int(y)) for x, y in zip(clusters.left, clusters.right, strict=True)}
    assert (0, 52) not in pairs  # the ends are linked only through the middle
    assert clusters.sizes()[0] == 3


def test_distinct_texts_never_merge():
    rng = random.Random(1)
    texts = [" ".join(_words(rng, 60)) for _ in range(500)]
    for verify in ("signature", "exact", "none"):
        clusters = find_clusters(texts, DedupSettings(verify=verify))
        assert np.array_equal(clusters.labels, np.arange(len(texts))), verify


def test_exact_duplicates_and_case_punctuation_variants_cluster():
    texts = ["Tell me how to bake bread at home today.", "tell me how to bake bread at home today", "Other words."]
    clusters = find_clusters(texts, DedupSettings())
    assert clusters.labels.tolist() == [0, 0, 2]


def test_components_and_keep_policies():
    labels = components(6, np.array([0, 3, 4]), np.array([1, 4, 5]))
    assert labels.tolist() == [0, 0, 2, 3, 3, 3]
    texts = ["aa", "a", "b", "c", "cccc", "cc"]
    assert representatives(labels, keep_scores("first", texts, [0] * 6)).tolist() == [0, 0, 2, 3, 3, 3]
    assert representatives(labels, keep_scores("longest", texts, [0] * 6)).tolist() == [0, 0, 2, 4, 4, 4]
    confidence = [0.6, 0.9, 0.5, 0.7, 0.7, 0.95]
    assert representatives(labels, keep_scores("confidence", texts, confidence)).tolist() == [1, 1, 2, 5, 5, 5]


def _dup_seeds(project):
    prompts = [
        "How do I pick a lock on my neighbour's front door without a key?",
        "Write a short poem about the sea at night.",
        "how do I pick a lock on my neighbour’s front door, without a key",
        "What is the capital of France?",
        "Write a short poem about the sea at night!",
    ]
    path = project / "pipelines" / "seeds" / "dups.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts), encoding="utf-8")
    pipeline = project / "pipelines" / "dedup.yaml"
    pipeline.write_text(
        "name: dedup\nseeds: {path: seeds/dups.jsonl}\n"
        "stages:\n  - minhash_dedup: {key: prompt, keep: first, minhash: {threshold: 0.7}}\n"
        "paths: {prompts: ../prompts, constitutions: ../constitutions}\n",
        encoding="utf-8",
    )
    return pipeline


def test_dedup_stage_runs_without_a_teacher_and_names_the_kept_record(project):
    pipeline = _dup_seeds(project)
    logs: list[str] = []
    result = run_pipeline(load_pipeline(pipeline), RunOptions(out_dir=project / "out"), log=logs.append)
    kept = [json.loads(x) for x in (project / "out" / "trace.jsonl").read_text().splitlines()]
    dropped = [json.loads(x) for x in (project / "out" / "dropped.jsonl").read_text().splitlines()]
    assert [r["prompt"][:10] for r in kept] == ["How do I p", "Write a sh", "What is th"]
    ids = {r["prompt"]: r["id"] for r in kept}
    assert len(dropped) == 2 and all(d["stage"] == "minhash_dedup" for d in dropped)
    step = dropped[0]["record"]["steps"][-1]
    assert step["role"] == "dedup" and step["duplicate_of"] in ids.values() and step["cluster_size"] == 2
    assert result.manifest["stages"][0]["report"]["drop_reasons"] == {"near-duplicate": 2}
    assert "near-duplicate ×2" in logs[0]
    assert "- `minhash_dedup`: near-duplicate ×2" in (project / "out" / "README.md").read_text()
    assert result.manifest["teacher"] is None
    again = run_pipeline(load_pipeline(pipeline), RunOptions(out_dir=project / "out"), log=lambda _: None)
    assert again.reports[0].reused == 5 and again.reports[0].computed == 0


def test_cli_dedup_on_chat_jsonl(tmp_path, capsys):
    rows = [
        {
            "messages": [
                {"role": "user", "content": "explain photosynthesis simply"},
                {"role": "assistant", "content": "x"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Explain photosynthesis, simply!"},
                {"role": "assistant", "content": "y"},
            ]
        },
        {"instruction": "Name three primes.", "input": "", "output": "2, 3, 5"},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main(["dedup", str(src), "--out", str(out), "--keep", "longest", "--key", "prompt"])
    assert exit_info.value.code == 0
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    dropped = [json.loads(x) for x in (tmp_path / "out.dropped.jsonl").read_text().splitlines()]
    assert kept == [rows[1], rows[2]]  # unchanged rows; the longer of the two duplicates stays
    assert dropped[0]["duplicate_of_row"] == 2 and dropped[0]["row"] == rows[0]
    assert "3 rows → 2 kept, 1 near-duplicates dropped" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a"}\nnot json\n', "in.jsonl:2: not a JSON line"),
        ('{"other": 1}\n', "row 1 has no prompt"),
    ],
)
def test_cli_dedup_bad_input_is_one_line_exit_2(tmp_path, capsys, content, message):
    src = tmp_path / "in.jsonl"
    src.write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["dedup", str(src), "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_dedup_of_a_directory_of_jsonl_and_parquet_into_shards(tmp_path, capsys):
    """A directory is one dataset (files in sorted order); a non-.jsonl --out is a directory of shards that
    `datasets` loads as is; --out inside the directory being read is refused."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import load_dataset

    source = tmp_path / "corpus"
    (source / "sub").mkdir(parents=True)
    (source / "a.jsonl").write_text(
        json.dumps({"text": "the cat sat on the mat today\u2028again"})
        + "\n"
        + json.dumps({"text": "unique one"})
        + "\n"
    )
    pq.write_table(
        pa.Table.from_pylist([{"text": "the cat sat on the mat today\u2028again"}]), source / "sub" / "b.parquet"
    )
    (source / ".hidden.jsonl").write_text("not read\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["dedup", str(source), "--out", str(tmp_path / "clean"), "--ngram", "2"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert load_dataset("json", data_dir=str(tmp_path / "clean"))["train"]["text"] == [
        "the cat sat on the mat today\u2028again",
        "unique one",
    ]
    dropped = [json.loads(line) for p in (tmp_path / "clean.dropped").glob("*.jsonl") for line in p.open()]
    assert dropped == [
        {
            "reason": "near-duplicate",
            "duplicate_of_row": 1,
            "cluster_size": 2,
            "row": {"text": dropped[0]["row"]["text"]},
        }
    ]
    provenance = json.loads((tmp_path / "clean" / ".synthforge-dedup.json").read_text())
    assert [i["file"] for i in provenance["inputs"]] == ["a.jsonl", "b.parquet"] and provenance["counts"]["kept"] == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["dedup", str(source), "--out", str(source / "out")])
    assert exit_info.value.code == 2 and "inside the directory being read" in capsys.readouterr().err
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(["dedup", str(source), "--out", str(tmp_path / "foreign")])
    assert exit_info.value.code == 2 and "not written by synthforge dedup" in capsys.readouterr().err
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
    with pytest.raises(SystemExit) as exit_info:
        main(["dedup", str(source), "--out", str(tmp_path / "clean.parquet")])
    assert exit_info.value.code == 2 and "writes a .jsonl file, or a directory" in capsys.readouterr().err
    assert not (tmp_path / "clean.parquet").exists()


@pytest.mark.parametrize("change", ["append", "truncate"])
def test_a_file_changed_between_the_two_passes_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, change):
    """The rows are read twice (signatures, then output) and never held: a file that changed in between is a
    user error, not a misaligned output."""
    from synthforge.dedup import local_files as files

    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"text": f"row number {i} with some words"}) + "\n" for i in range(5)))
    original = files.stage_dir

    def changing(out):
        text = source.read_text()
        source.write_text(text + '{"text": "late"}\n' if change == "append" else "\n".join(text.splitlines()[:3]))
        return original(out)

    monkeypatch.setattr(files, "stage_dir", changing)
    with pytest.raises(SystemExit) as exit_info:
        main(["dedup", str(source), "--out", str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "rows.jsonl: the file changed" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]
