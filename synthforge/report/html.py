"""Render run and training reports as one self-contained HTML file (CSS, script and SVG charts inline).

Templates are Jinja2 with autoescaping on; records travel to the page as JSON whose ``<``, ``>`` and ``&``
are escaped, and the page script inserts text with ``textContent`` only — a response holding ``<script>``
or ``</textarea>`` is shown as text, never run.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from markupsafe import Markup

from synthforge.errors import UserError
from synthforge.files import check_not_input, claim_file, output_lock, write_atomic
from synthforge.report import aggregates as agg
from synthforge.report.svg import bar_chart, histogram, line_chart
from synthforge.validation import check_json

TEMPLATES = files("synthforge.report").joinpath("templates")


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def _asset(name: str) -> str:
    return TEMPLATES.joinpath(name).read_text(encoding="utf-8")


def _safe_json(value: Any) -> Markup:
    """JSON that can sit inside a <script> element: no ``<``, ``>`` or ``&`` characters left in it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return Markup(text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"))


def render_run_report(run_dir: Path) -> str:
    """The HTML report of a finished run directory."""
    manifest, kept, dropped = agg.load_run(run_dir)
    fields, rows, labels, rates = agg.principle_rows(manifest)
    principle_svgs = [
        (labels.get(f, f.replace("_", " ")), Markup(bar_chart([(r["name"], r[f] or 0.0) for r in rows], percent=True)))
        for f in rates
    ]
    confidences = agg.confidences(kept, dropped)
    page = (
        _environment()
        .from_string(_asset("run.html.j2"))
        .render(
            s=agg.summary(manifest),
            stages=agg.stage_table(manifest),
            funnel_svg=Markup(bar_chart(agg.funnel(manifest))),
            length_svgs=[(name, Markup(histogram(values))) for name, values in agg.lengths(kept, dropped).items()],
            principle_fields=fields,
            principle_rows=rows,
            principle_labels=labels,
            principle_rates=rates,
            principle_svgs=principle_svgs,
            confidence_svg=Markup(histogram(confidences, low=0.5, high=1.0)) if confidences else None,
            drops=agg.drop_groups(dropped),
            rows_json=_safe_json(agg.browser_rows(kept, dropped)),
            css=Markup(_asset("report.css")),
            js=Markup(_asset("report.js")),
        )
    )
    return page


GENERATOR = '<meta name="generator" content="synthforge">'


def is_report(path: Path) -> bool:
    """A file synthforge wrote as a report (its generator tag, or the title reports had before the tag)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            head = handle.read(2048)
    except OSError:
        return False
    return head.startswith("<!doctype html>") and (GENERATOR in head or "<title>synthforge \u00b7" in head)


def write_run_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write ``report.html`` (or ``out``) for a run directory; returns its path."""
    target = out or run_dir / "report.html"
    write_atomic(target, render_run_report(run_dir))
    return target


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


TRAINING_SCHEMA = {
    "type": "object",
    "properties": {
        "log_history": {"type": "array", "items": {"type": "object"}},
        "metrics": {"type": "object"},
        "data": {"type": ["object", "null"]},
        "base_model": {"type": ["object", "null"]},
    },
}


def render_training_report(model_dir: Path, name: str | None = None) -> str:
    """The HTML report of a training run (its ``training.json``): curves, evaluation, data provenance."""
    path = model_dir / "training.json"
    if not path.is_file():
        raise UserError(f"{model_dir}: no training.json (not a directory written by synthforge train)")
    run = agg.read_json(path, "training.json")
    check_json(run, TRAINING_SCHEMA, str(path))
    history, metrics = run.get("log_history", []), run.get("metrics", {})

    def series(key: str) -> list[tuple[float, float]]:
        return [(float(e["step"]), float(e[key])) for e in history if key in e and "step" in e]

    curves = [("loss", Markup(line_chart({"train": series("loss"), "eval": series("eval_loss")})))]
    if series("reward"):
        curves.append(("reward and KL", Markup(line_chart({"reward": series("reward"), "KL": series("kl")}))))
    before, after = metrics.get("eval_before") or {}, metrics.get("eval_after") or {}
    evaluation = [(k, _fmt(before.get(k)), _fmt(after.get(k))) for k in after if k in before]
    summary = [(k, _fmt(metrics.get(k))) for k in ("train_loss", "train_steps", "train_rows", "eval_rows", "seconds")]
    summary += [("labels", metrics["labels"])] if "labels" in metrics else []
    data = [(k, _fmt(v)) for k, v in (run.get("data") or {}).items() if k != "run"]
    data += [(f"run {k}", _fmt(v)) for k, v in ((run.get("data") or {}).get("run") or {}).items()]
    return (
        _environment()
        .from_string(_asset("train.html.j2"))
        .render(
            kind=run.get("kind", "?"),
            base=(run.get("base_model") or {}).get("name", "?"),
            out_dir=name or model_dir.name,
            summary=summary,
            curves=curves,
            evaluation=evaluation,
            warnings=metrics.get("warnings") or [],
            data=data,
            version=run.get("synthforge_version"),
            css=Markup(_asset("report.css")),
        )
    )


def write_training_report(model_dir: Path, name: str | None = None) -> Path:
    """Write ``report.html`` beside a trained model (``name``: the directory's published name); returns its path."""
    target = model_dir / "report.html"
    write_atomic(target, render_training_report(model_dir, name))
    return target


def write_report(directory: Path, out: Path | None = None) -> Path:
    """``synthforge report``: the report of a run or training directory to ``out`` (default
    ``DIRECTORY/report.html``), only ever over a report synthforge wrote, never over an input; one writer."""
    target = (out or directory / "report.html").expanduser()
    inputs = [directory / name for name in ("manifest.json", "trace.jsonl", "dropped.jsonl", "training.json")]
    check_not_input(target, [directory, *inputs], "--out")
    with output_lock(target, "--out", "report"):
        claim_file(target, is_report, "--out", "report")
        if (directory / "training.json").is_file():
            write_atomic(target, render_training_report(directory))
            return target
        return write_run_report(directory, target)
