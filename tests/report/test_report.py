"""`synthforge report`: aggregates equal a recount from the trace; the page works in real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter

import pytest

from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.report import aggregates as agg
from synthforge.report.html import render_run_report, render_training_report
from synthforge.teachers.base import Completion
from synthforge.teachers.scripted import ScriptedTeacher
from tests.conftest import write_pipeline

INJECTED = '<script>window.pwned = 1</script></textarea><img src=x onerror="window.pwned = 2">'


def InjectingTeacher() -> ScriptedTeacher:  # noqa: N802
    """Answers with text that would run as script if a report ever inserted it as HTML."""
    answered = [0]

    def reply(conversation) -> Completion:
        text, answered[0] = conversation[-1]["content"], answered[0] + 1
        body = (
            f"{INJECTED} answer {len(text)} {answered[0]}" if "Critique" not in text else "The answer is fine but long."
        )
        return Completion(body, "stop", 10, 8)

    return ScriptedTeacher(
        reply, identity={"backend": "scripted", "name": "injecting"}, capabilities=frozenset({"generate"})
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    from synthforge.builtin import ROOT as BUILTIN

    project = tmp_path_factory.mktemp("report-project")
    for name in ("prompts", "constitutions", "pipelines"):
        shutil.copytree(BUILTIN / name, project / name)
    path = write_pipeline(project, tiny_model_dir)
    text = path.read_text().replace("stages:\n", "stages:\n  - minhash_dedup: {key: prompt}\n")
    path.write_text(text)
    result = run_pipeline(
        load_pipeline(path),
        RunOptions(out_dir=project / "run", limit=30),
        teacher=InjectingTeacher(),
        log=lambda _: None,
    )
    return result.out_dir


def test_aggregates_equal_a_recount_from_the_trace(run_dir):
    manifest, kept, dropped = agg.load_run(run_dir)
    assert agg.funnel(manifest)[0] == ("seeds", 30) and agg.funnel(manifest)[-1][1] == len(kept)
    everything = kept + [d["record"] for d in dropped]
    lengths = agg.lengths(kept, dropped)
    assert Counter(lengths["prompt"]) == Counter(len(r["prompt"].split()) for r in everything)
    revisions = [r for r in everything if any(s["role"] == "revision" for s in r["steps"])]
    assert sorted(lengths["revision"]) == sorted(len((r["response"] or "").split()) for r in revisions)
    _, rows, _, _ = agg.principle_rows(manifest)
    critiques = Counter(s["principle"] for r in everything for s in r["steps"] if s["role"] == "critique")
    assert {row["name"]: row["critiques"] for row in rows} == dict(critiques)
    groups = agg.drop_groups(dropped)
    assert sum(g["count"] for g in groups) == len(dropped) == manifest["counts"]["dropped"]


def test_the_report_is_one_file_that_escapes_model_text(run_dir):
    html = render_run_report(run_dir)
    assert "<script>window.pwned" not in html and "<img src=x" not in html and "</textarea>" not in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    trace_size = (run_dir / "trace.jsonl").stat().st_size
    assert len(html.encode()) < 2 * trace_size + 60_000  # the fixed part: CSS, script, charts


def _chromium():
    """Chromium and its driver from Debian's packages: installed by this set-up where missing (CI has none)."""
    pytest.importorskip("selenium", reason="selenium is a dev dependency (make test installs it)")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("Chromium is not installed and this user cannot apt-get install chromium chromium-driver")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]):
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if done.returncode != 0:
                pytest.skip(f"could not install Chromium from Debian's packages: {done.stderr.strip()[-300:]}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,2000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def test_the_report_in_headless_chromium(run_dir, tmp_path):
    from selenium.webdriver.common.by import By

    report = run_dir / "report.html"
    assert report.is_file()  # generate writes it at the end of every run
    browser = _chromium()
    try:
        browser.get(report.as_uri())
        for section in ("summary", "funnel", "lengths", "principles", "records", "drops"):
            assert browser.find_element(By.ID, section).is_displayed(), section
        assert browser.execute_script("return window.pwned === undefined")
        cards = browser.find_elements(By.CSS_SELECTOR, "article.record")
        assert len(cards) == 20 and "page 1 of 2" in browser.find_element(By.ID, "page").text
        assert INJECTED[:20] in cards[0].text  # shown as text
        browser.find_element(By.ID, "next").click()
        assert "page 2 of 2" in browser.find_element(By.ID, "page").text
        total = int(browser.find_element(By.ID, "page").text.split("·")[1].split()[0])
        assert len(browser.find_elements(By.CSS_SELECTOR, "article.record")) == total - 20
        browser.find_element(By.ID, "search").send_keys("hotwire")
        cards = browser.find_elements(By.CSS_SELECTOR, "article.record")
        assert len(cards) == 1 and "hotwire" in cards[0].text
        assert browser.execute_script("return window.pwned === undefined")
        assert browser.find_elements(By.CSS_SELECTOR, "del, ins")  # the word diff of first → final answer
        browser.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000
    finally:
        browser.quit()


def test_training_report(tmp_path):
    model_dir = tmp_path / "student"
    model_dir.mkdir()
    history = [{"step": 1, "loss": 0.7, "reward": 0.1, "kl": 0.0}, {"step": 2, "loss": 0.5, "reward": 0.3, "kl": 0.2}]
    (model_dir / "training.json").write_text(
        json.dumps(
            {
                "kind": "rlhf",
                "base_model": {"name": "tiny"},
                "synthforge_version": "x",
                "metrics": {
                    "train_loss": 0.6,
                    "train_steps": 2,
                    "eval_before": {"mean_reward": 0.1},
                    "eval_after": {"mean_reward": 0.3},
                    "warnings": ["<b>KL</b> drifted"],
                },
                "data": {"path": "prompts.txt", "sha256": "ab"},
                "log_history": history,
            }
        )
    )
    html = render_training_report(model_dir)
    assert "reward and KL" in html and "&lt;b&gt;KL&lt;/b&gt; drifted" in html and "<polyline" in html
