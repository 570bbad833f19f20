"""Prompt templates: strict variables, errors that name the file, values never compiled as templates."""

from __future__ import annotations

import pytest

from synthforge.builtin import ROOT as BUILTIN
from synthforge.errors import UserError
from synthforge.prompts import load_template


def test_undefined_variable_names_the_file(tmp_path):
    (tmp_path / "bad.j2").write_text("Answer {{ prompt }} using {{ missing_thing }}", encoding="utf-8")
    template = load_template("bad", tmp_path)
    with pytest.raises(UserError, match=r"bad\.j2: template uses an undefined variable: 'missing_thing'"):
        template.render(prompt="hi")


def test_syntax_error_names_file_and_line(tmp_path):
    (tmp_path / "broken.j2").write_text("line one\n{% if %}\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"broken\.j2:2: template syntax error"):
        load_template("broken", tmp_path)


def test_values_are_not_compiled_as_template_source():
    template = load_template("respond", BUILTIN / "prompts")
    hostile = "{{ 7 * 7 }} {% for x in range(3) %}x{% endfor %}"
    assert template.render(prompt=hostile) == hostile


def test_missing_template_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="prompt template 'nope' not found"):
        load_template("nope", tmp_path)


def test_hash_follows_text(tmp_path):
    (tmp_path / "t.j2").write_text("a {{ prompt }}", encoding="utf-8")
    first = load_template("t", tmp_path).sha256
    (tmp_path / "t.j2").write_text("b {{ prompt }}", encoding="utf-8")
    assert load_template("t", tmp_path).sha256 != first
