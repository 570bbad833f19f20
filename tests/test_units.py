"""Unit tests of shared pieces: the retry/split path, config building, the SVG charts and the dataset card."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pytest
import yaml

from synthforge.engine.dataset_card import render_card
from synthforge.engine.executor import process_with_retries
from synthforge.errors import StageFailed, TeacherError, UserError
from synthforge.records import Drop, Record
from synthforge.report.svg import bar_chart, histogram, line_chart
from synthforge.settings import SpecError, build_config
from synthforge.stages.base import Stage, StageResources


# -- retries, splitting, the ledger ------------------------------------------------------------------------
@dataclass
class _NoSettings:
    pass


class _FlakyStage(Stage):
    """Fails any batch holding a record whose prompt is in ``bad`` (with ``error``), else echoes the batch."""

    kind = "flaky"
    Config = _NoSettings
    uses_teacher = False

    def __init__(self, bad, error):
        super().__init__("flaky", {}, StageResources(prompts_dir=None, constitutions_dir=None, seed=0))
        self.bad, self.error, self.calls = set(bad), error, []

    def process(self, batch, teacher):
        self.calls.append([r.prompt for r in batch])
        if any(r.prompt in self.bad for r in batch):
            raise self.error
        return list(batch)


NO_TEACHER = {"default": None}  # the team these stages get: they call no teacher


def _records(*prompts):
    return [Record(id=p, prompt=p) for p in prompts]


def test_a_failing_batch_is_retried_then_split_and_only_the_bad_record_is_ledgered():
    stage = _FlakyStage({"b"}, TeacherError("HTTP 500: boom"))
    results = process_with_retries(stage, _records("a", "b", "c"), NO_TEACHER, retries=2)
    assert [r.id if isinstance(r, Record) else f"drop:{r.record.id}" for r in results] == ["a", "drop:b", "c"]
    assert results[1].reason == "teacher error after 3 attempt(s) alone: HTTP 500: boom"
    assert stage.calls[:3] == [["a", "b", "c"]] * 3  # the batch, retried twice
    assert stage.calls[3:] == [["a"], ["b"], ["b"], ["b"], ["c"]]  # then record by record


def test_a_non_retryable_error_splits_at_once_and_is_not_retried():
    stage = _FlakyStage({"b"}, TeacherError("HTTP 400: bad request", retryable=False))
    results = process_with_retries(stage, _records("a", "b"), NO_TEACHER, retries=5)
    assert stage.calls == [["a", "b"], ["a"], ["b"]]
    assert isinstance(results[1], Drop) and "1 attempt (not retryable)" in results[1].reason


def test_a_bug_or_a_user_error_stops_instead_of_becoming_drops():
    with pytest.raises(StageFailed, match="raised KeyError"):
        process_with_retries(_FlakyStage({"a"}, KeyError("x")), _records("a"), NO_TEACHER, retries=2)
    with pytest.raises(UserError, match="a file is missing"):
        process_with_retries(_FlakyStage({"a"}, UserError("a file is missing")), _records("a"), NO_TEACHER, retries=2)
    short = _FlakyStage(set(), None)
    short.process = lambda batch, teacher: batch[:1]
    with pytest.raises(StageFailed, match="returned 1 results for 2 records"):
        process_with_retries(short, _records("a", "b"), NO_TEACHER, retries=0)


# -- configs from YAML ------------------------------------------------------------------------------------
@dataclass
class _Inner:
    low: float = 0.0
    tags: tuple[str, ...] = ()


@dataclass
class _Outer:
    name: str
    count: int = 1
    ratio: float = 0.5
    maybe: int | None = None
    inner: _Inner = field(default_factory=_Inner)

    def __post_init__(self):
        if self.count < 0:
            raise ValueError("count must be >= 0")


def test_build_config_converts_and_names_every_bad_key_path():
    built = build_config(_Outer, {"name": "x", "ratio": 1, "inner": {"tags": ["a", "b"]}, "maybe": None}, "cfg")
    assert built == _Outer(name="x", ratio=1.0, inner=_Inner(tags=("a", "b")))
    assert isinstance(built.ratio, float) and isinstance(built.inner.tags, tuple)
    cases = [
        ({"name": "x", "colour": 1}, "cfg.colour: unknown setting (expected one of: count, inner, maybe, name, ratio)"),
        ({"name": "x", "count": "3"}, "cfg.count: expected int, got str '3'"),
        ({"name": "x", "count": True}, "cfg.count: expected int, got a boolean"),
        ({"name": "x", "ratio": math.inf}, "cfg.ratio: expected a finite number, got inf"),
        ({"name": "x", "inner": {"low": "no"}}, "cfg.inner.low: expected float, got str 'no'"),
        ({"name": "x", "inner": {"tags": "a"}}, "cfg.inner.tags: expected a list, got str 'a'"),
        ({}, "cfg.name: required setting is missing"),
        ({"name": "x", "count": -1}, "cfg: count must be >= 0"),
        ([1], "cfg: expected a mapping of settings, got list [1]"),
    ]
    for data, message in cases:
        with pytest.raises(SpecError) as info:
            build_config(_Outer, data, "cfg")
        assert str(info.value) == message


# -- charts -----------------------------------------------------------------------------------------------
def _svg(text: str) -> ET.Element:
    return ET.fromstring(text)  # well-formed XML, or this raises


def test_charts_are_well_formed_svg_with_escaped_labels():
    bars = _svg(bar_chart([("<script>x</script>", 3.0), ("b & c", 1.0)], percent=False))
    assert len([e for e in bars.iter() if e.tag.endswith("rect")]) >= 2
    texts = "".join(e.text or "" for e in bars.iter())
    assert "<script>x</script>" in texts  # as text, escaped in the markup: not an element
    assert not [e for e in bars.iter() if e.tag.endswith("script")]
    hist = _svg(histogram([1, 2, 2, 3, 3, 3, 10]))
    assert [e for e in hist.iter() if e.tag.endswith("rect")]
    lines = _svg(line_chart({"train": [(1, 2.0), (2, 1.0), (3, 0.5)], "eval": [(3, 0.7)]}))
    assert "train" in "".join(e.text or "" for e in lines.iter())
    assert bar_chart([]) == "" and "no values" in histogram([]) and "nothing logged" in line_chart({"train": []})


# -- the dataset card ------------------------------------------------------------------------------------
def _manifest(**extra):
    stage = {
        "name": "critique_revise",
        "kind": "critique_revise",
        "fingerprint": "f" * 64,
        "constitution": "harmless",
        "tags": ["constitutional-ai"],
        "notes": ["the judge agrees with itself on 10%"],
        "report": {"drop_reasons": {"empty response": 2}},
    }
    return {
        "teacher": {"name": "tiny", "backend": "transformers", "weights": "w", "dtype": "float32"},
        "pipeline": {"name": "demo", "path": "demo.yaml", "sha256": "a" * 64, "description": "A demo."},
        "seed": 3,
        "counts": {"sft": 4, "dpo": 2},
        "export": {"license": "apache-2.0"},
        "stages": [stage],
        "funnel": [{"step": "seeds", "records": 6}, {"step": "kept (sft)", "records": 4}],
        "groups": {
            "principle": {
                "members": {"harm": {"critiques": 3, "critique_change_rate": 0.5}},
                "labels": {"critique_change_rate": "asked for change"},
                "rates": ["critique_change_rate"],
            }
        },
        **extra,
    }


def test_the_dataset_card_has_configs_tags_funnel_drops_notes_and_groups():
    card = render_card(_manifest())
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "apache-2.0"
    assert header["tags"] == ["synthetic", "constitutional-ai", "synthforge"]
    assert [c["config_name"] for c in header["configs"]] == ["sft", "dpo"]
    assert "| seeds | 6 |" in card and "`critique_revise`: empty response ×2" in card
    assert "## Notes" in card and "agrees with itself on 10%" in card
    assert "| harm | 3 | 50% |" in card and "asked for change" in card
    plain = render_card(_manifest(stages=[{**_manifest()["stages"][0], "tags": [], "notes": []}], counts={}))
    assert yaml.safe_load(plain.split("---")[1])["tags"] == ["synthetic", "synthforge"]
    assert "## Notes" not in plain


def test_a_renamed_setting_is_read_under_its_older_name_and_both_at_once_are_refused():
    """Settings renamed so that each name says one thing keep their old spelling as an alias."""
    from synthforge.engine.local_executor import LocalSettings
    from synthforge.stages.minhash_dedup import MinHashDedupConfig

    assert build_config(LocalSettings, {"workers": 4}, "engine").batches_in_flight == 4
    assert build_config(LocalSettings, {"batches_in_flight": 3}, "engine").batches_in_flight == 3
    with pytest.raises(SpecError, match=r"^engine\.batches_in_flight: set twice, also under its older name workers"):
        build_config(LocalSettings, {"workers": 4, "batches_in_flight": 3}, "engine")
    assert build_config(MinHashDedupConfig, {"ray_workers": 3}, "stages.minhash_dedup").workers == 3
    with pytest.raises(SpecError, match=r"stages\.minhash_dedup: engine must be one of local, ray"):
        build_config(MinHashDedupConfig, {"engine": "spark"}, "stages.minhash_dedup")


def test_where_minhash_dedup_clusters_is_out_of_its_cache_key_under_either_name():
    """``engine``/``workers`` (and the old ``ray_workers``) choose where the clustering runs, not its result:
    the stage's fingerprint is the same as with none of them, as it was before the rename."""
    from synthforge.builtin import ROOT
    from synthforge.stages.minhash_dedup import MinHashDedup

    resources = StageResources(ROOT / "prompts", ROOT / "constitutions", 0)

    def stage(settings):
        return MinHashDedup("minhash_dedup", settings, resources)

    plain = stage({})
    for settings in ({"ray_workers": 4}, {"engine": "ray", "workers": 2}, {"engine": "local"}):
        assert stage(settings).fingerprint() == plain.fingerprint(), settings
    assert "engine" not in plain.fingerprint()["config"] and "key" in plain.fingerprint()["config"]
    assert plain.ray_workers() == 0
    assert stage({"ray_workers": 4}).ray_workers() == 4
    assert stage({"engine": "ray"}).ray_workers() == 2
    assert stage({"engine": "local"}).distributed(8).ray_workers() == 0
    assert stage({"ray_workers": 4}).distributed(8).ray_workers() == 4
    assert plain.distributed(8).ray_workers() == 8
