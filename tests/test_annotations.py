"""What stages leave on records is a typed, declared contract (synthforge/annotations.py): no module reads or writes
``Record.meta`` by a string key of its own, every stage declares what it writes, and the stored form is what it
was before the types existed (old runs' checkpoints and traces keep their hashes)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from synthforge.annotations import ANNOTATIONS, PREFERENCE, Preference, RewardGap
from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.errors import StageFailed
from synthforge.records import Record
from synthforge.stages import STAGES, stage_class
from synthforge.teachers.scripted import ScriptedTeacher

PACKAGE = Path(__file__).resolve().parents[1] / "synthforge"
OWNERS = {"annotations.py", "records.py"}  # the declarations, and the record that stores them


def _string_keys_on_meta(tree: ast.AST) -> list[int]:
    """Lines where ``meta`` is read or written with a literal string key: ``x.meta["k"]``, ``x.meta.get("k")``,
    ``meta={... "k": ...}``, ``x.meta = {"k": ...}``."""
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Subscript)
            and _is_meta(node.value)
            and isinstance(node.slice, ast.Constant)
            or (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and _is_meta(node.func.value)
                and node.args
                and isinstance(node.args[0], ast.Constant)
            )
        ):
            lines.append(node.lineno)
        elif isinstance(node, ast.keyword) and node.arg == "meta" and _literal_keys(node.value):
            lines.append(node.value.lineno)
        elif isinstance(node, ast.Assign) and any(_is_meta(t) for t in node.targets) and _literal_keys(node.value):
            lines.append(node.lineno)
    return sorted(lines)


def _is_meta(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "meta"


def _literal_keys(node: ast.AST) -> bool:
    return isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) for k in node.keys)


def test_no_module_reads_or_writes_an_annotation_by_a_string_key_of_its_own():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in OWNERS and path.parent == PACKAGE:
            continue
        for line in _string_keys_on_meta(ast.parse(path.read_text(encoding="utf-8"))):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert found == []


def test_the_check_finds_what_it_looks_for():
    code = 'r.meta["x"]\nr.meta.get("y")\nreplace(r, meta={**r.meta, "z": 1})\nr.meta = {"w": 2}\nr.meta.get(key)\n'
    assert _string_keys_on_meta(ast.parse(code)) == [1, 2, 3, 4]


def test_every_stage_declares_only_registered_annotations_and_every_annotation_has_a_writer():
    declared = set()
    for kind in STAGES:
        for annotation in stage_class(kind).annotates:
            assert ANNOTATIONS.get(annotation.key) is annotation, (kind, annotation.key)
            declared.add(annotation.key)
    seeds = {"source", "harmful", "persona"}  # written by the seed reader (engine/seeds.py)
    assert declared | seeds == set(ANNOTATIONS)


def test_the_stored_form_is_the_one_before_the_types():
    judged = Preference(0.8, 0.8, position_checked=True)
    assert list(judged.to_dict()) == ["confidence", "p_first", "position_checked"]
    verified = Preference(0.6, 0.6, True, verified=True, tie=True)
    assert verified.to_dict() == {
        "confidence": 0.6,
        "p_first": 0.6,
        "verified": True,
        "position_checked": True,
        "tie": True,
    }
    assert list(verified.to_dict()) == ["confidence", "p_first", "verified", "position_checked", "tie"]
    record = PREFERENCE.on(Record(id="r", prompt="p"), judged)
    assert PREFERENCE.of(record) == judged and PREFERENCE.of(Record(id="s", prompt="p")) is None
    assert RewardGap.from_dict(RewardGap(1.0, 0.5, 0.5).to_dict()) == RewardGap(1.0, 0.5, 0.5)


def test_a_stage_writing_an_undeclared_annotation_stops_the_run(project, monkeypatch):
    from synthforge.stages.respond import Respond

    real = Respond.process

    def sneaky(self, batch, teacher):
        from dataclasses import replace

        return [replace(r, meta={**r.meta, **{"guess_me": 1}}) for r in real(self, batch, teacher)]

    monkeypatch.setattr(Respond, "process", sneaky)
    path = project / "pipelines" / "one.yaml"
    path.write_text(
        "name: one\nteacher: {model: m}\nseeds: {path: seeds/red-team.jsonl}\nstages:\n  - respond: {}\n"
        "paths: {prompts: ../prompts, constitutions: ../constitutions}\n"
    )
    with pytest.raises(StageFailed, match=r"stage respond wrote annotation 'guess_me', which it doesn't declare"):
        run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o", limit=1), teacher=ScriptedTeacher(str))
