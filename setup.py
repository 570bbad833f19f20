"""The one thing pyproject.toml can't say: the top-level ``constitutions/``, ``prompts/`` and ``pipelines/`` (the one
copy, edited in a checkout) go into the wheel as package data under ``synthforge/builtin/``, mapped at build time.
A checkout and an editable install read the top-level folders themselves (``synthforge.builtin.ROOT``)."""

from setuptools import find_packages, setup

BUILTIN = ("constitutions", "prompts", "pipelines")

setup(
    packages=[*find_packages(include=["synthforge*"]), *(f"synthforge.builtin.{kind}" for kind in BUILTIN)],
    package_dir={f"synthforge.builtin.{kind}": kind for kind in BUILTIN},
    package_data={
        "synthforge": ["templates/*.jinja", "report/templates/*"],
        **{f"synthforge.builtin.{kind}": ["*", "*/*"] for kind in BUILTIN},
    },
)
