"""What stages leave on records is a typed, declared contract: annotations (synthforge/annotations.py) and trace
steps (synthforge/trace.py). No module reads or writes ``Record.meta`` by a string key of its own, nor a step's
role by a string of its own; every stage declares what it writes, and the engine stops one that writes anything
else; the stored form is what it was before the types existed (old runs' checkpoints and traces keep their
hashes)."""

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
from synthforge.trace import CRITIQUE_STEP, FIELD_STEP, KINDS, RESPONSE_STEP, REVISION_STEP, ROLES

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


# -- trace steps (synthforge/trace.py) --------------------------------------------------------------


def _string_roles_of_steps(tree: ast.AST) -> list[int]:
    """Lines where a trace step's role is written or compared as a string of the module's own: a dict literal
    ``{"role": "revision", ...}`` or a comparison of ``x.get("role")`` / ``x["role"]`` with a declared role."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if _const(key) == "role" and _const(value) in ROLES:
                    lines.append(node.lineno)
        elif isinstance(node, ast.Compare) and _compares_a_role(node):
            lines.append(node.lineno)
    return sorted(lines)


def _compares_a_role(node: ast.Compare) -> bool:
    sides = (node.left, *node.comparators)
    return any(_reads_role(n) for n in sides) and any(r in ROLES for n in sides for r in _constants(n))


def _const(node: ast.AST | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _constants(node: ast.AST) -> list[object]:
    items = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
    return [_const(n) for n in items]


def _reads_role(node: ast.AST) -> bool:
    getter = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
    if getter and node.args and _const(node.args[0]) == "role":
        return True
    return isinstance(node, ast.Subscript) and _const(node.slice) == "role"


def test_no_module_writes_or_compares_a_step_role_by_a_string_of_its_own():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "trace.py" and path.parent == PACKAGE:
            continue
        for line in _string_roles_of_steps(ast.parse(path.read_text(encoding="utf-8"))):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert found == []


def test_the_step_check_finds_what_it_looks_for():
    code = (
        'x = {"stage": s, "role": "revision"}\n'
        'if step.get("role") == "critique": pass\n'
        'if s["role"] in ("response", "sample"): pass\n'
        'm = {"role": "user", "content": c}\n'
        'if m["role"] == "assistant": pass\n'
    )
    assert _string_roles_of_steps(ast.parse(code)) == [1, 2, 3]


def test_every_stage_declares_registered_step_kinds_and_every_kind_has_a_writer():
    declared = set()
    for kind in STAGES:
        for step_kind in stage_class(kind).traces:
            assert step_kind in KINDS, (kind, step_kind.role)
            declared.add(step_kind)
    assert declared == set(KINDS)


def test_a_step_is_the_mapping_it_was_before_the_types():
    """Same keys, same order: old traces read as they are, and new ones are written as before."""
    from synthforge.teachers.base import Completion

    done = Completion("hi", "stop", 3, 1)
    step = REVISION_STEP.answer("cr", done, round=0, principle="p", changed=True, writes=["response"])
    assert list(step) == [
        *("stage", "role", "text", "finish_reason", "prompt_tokens", "completion_tokens"),
        *("round", "principle", "changed", "writes"),
    ]
    assert step["role"] == "revision" and REVISION_STEP.is_(step) and not CRITIQUE_STEP.is_(step)
    thought = Completion("hi", "stop", 3, 1, reasoning="hmm")
    assert list(RESPONSE_STEP.answer("r", thought))[-1] == "reasoning"
    assert REVISION_STEP.last([{"role": "revision", "n": 1}, {"role": "critique"}, {"role": "revision", "n": 2}]) == {
        "role": "revision",
        "n": 2,
    }
    with pytest.raises(TypeError, match="a revision step has no field 'verdict'"):
        REVISION_STEP.make("cr", verdict=1)
    assert FIELD_STEP.answer("g", done, role="label")["role"] == "label"
    with pytest.raises(TypeError):
        FIELD_STEP.make("g")  # its stage names its role


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"role": "guess_me"}, r"stage respond wrote a trace step 'guess_me' it doesn't declare"),
        ({"mood": "good"}, r"stage respond wrote field 'mood' on a response step, which its kind \(ResponseStep"),
    ],
)
def test_a_stage_writing_an_undeclared_step_or_field_stops_the_run(project, monkeypatch, extra, message):
    from dataclasses import replace

    from synthforge.stages.respond import Respond

    real = Respond.process

    def sneaky(self, batch, teacher):
        return [replace(r, steps=[*r.steps[:-1], {**r.steps[-1], **extra}]) for r in real(self, batch, teacher)]

    monkeypatch.setattr(Respond, "process", sneaky)
    path = project / "pipelines" / "one.yaml"
    path.write_text(
        "name: one\nteacher: {model: m}\nseeds: {path: seeds/red-team.jsonl}\nstages:\n  - respond: {}\n"
        "paths: {prompts: ../prompts, constitutions: ../constitutions}\n"
    )
    with pytest.raises(StageFailed, match=message):
        run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o", limit=1), teacher=ScriptedTeacher(str))
