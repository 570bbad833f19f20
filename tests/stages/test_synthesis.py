"""Instruction synthesis: the fast novelty filter against references, Self-Instruct's filters, Evol-Instruct's
seeded operations and eliminations, Magpie's pre-query text for two chat-template families."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from synthforge.builtin import ROOT as BUILTIN
from synthforge.dedup.rouge import NoveltyIndex, lcs_length, rouge_l_f1, rouge_tokens
from synthforge.engine.runner import RunOptions, run_pipeline
from synthforge.engine.spec import load_pipeline
from synthforge.errors import UserError
from synthforge.stages import stage_class
from synthforge.stages.base import StageResources
from synthforge.stages.evol_instruct import elimination_reason
from synthforge.stages.helpers.instruction_rules import BANNED_KEYWORDS, rejection_reason, split_instructions
from synthforge.stages.magpie import pre_query_text
from synthforge.teachers.base import GENERATE, STRUCTURED, Completion, per_conversation
from synthforge.teachers.scripted import ScriptedTeacher

TASKS = [json.loads(x)["instruction"] for x in (BUILTIN / "pipelines/seeds/tasks.jsonl").read_text().splitlines()]


def _dp_lcs(a, b) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def _candidates() -> list[str]:
    """The seed tasks, then edited copies (some near, some far) in a fixed order."""
    rng = random.Random(0)
    out = list(TASKS)
    for task in TASKS:
        words = task.split()
        for rate in (0.1, 0.3, 0.6):
            edited = [w if rng.random() > rate else rng.choice(["please", "quickly", "data", "story"]) for w in words]
            out.append(" ".join(edited))
    return out


def _reference_decisions(texts, score) -> list[bool]:
    pool, decisions = [], []
    for text in texts:
        novel = all(score(text, p) <= 0.7 for p in pool)
        decisions.append(novel)
        if novel:
            pool.append(text)
    return decisions


def test_novelty_decisions_equal_a_plain_reference():
    texts = _candidates()

    def plain(a, b):
        ta, tb = rouge_tokens(a), rouge_tokens(b)
        return rouge_l_f1(_dp_lcs(ta, tb), len(ta), len(tb))

    index = NoveltyIndex(0.7)
    verdicts = [index.offer(t) for t in texts]
    ours = [v.novel for v in verdicts]
    assert ours == _reference_decisions(texts, plain)
    assert 40 < sum(ours) < len(texts)  # both kinds of decision occur
    pool: list[str] = []
    for text, verdict in zip(texts, verdicts, strict=True):
        if verdict.novel:  # a novel candidate's score is the exact maximum over the pool it met
            assert verdict.score == pytest.approx(max((plain(text, p) for p in pool), default=0.0))
            pool.append(text)


def test_novelty_decisions_equal_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    texts = _candidates()
    index = NoveltyIndex(0.7)
    ours = [index.offer(t).novel for t in texts]
    assert ours == _reference_decisions(texts, lambda a, b: scorer.score(b, a)["rougeL"].fmeasure)


def test_bit_parallel_lcs_equals_dynamic_programming():
    rng = random.Random(3)
    for _ in range(300):
        a = [rng.randint(0, 5) for _ in range(rng.randint(0, 30))]
        b = [rng.randint(0, 5) for _ in range(rng.randint(0, 30))]
        assert lcs_length(a, b) == _dp_lcs(a, b)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Write a poem about the sea.", None),
        ("Sort numbers.", "too short (2 < 4 words)"),
        ("Draw a picture of a cat sitting down.", "banned keyword ('picture')"),
        ("Summarize the attached file in one line.", "banned keyword ('file')"),
        ("Describe how to go to the station.", "banned keyword ('go to')"),
        ("- list three fruits please now", "starts with punctuation"),
        ("Écris un poème sur la mer.", "starts with a non-ASCII character"),
        (" ".join(["word"] * 151), "too long (151 > 150 words)"),
        ("Sure, here are the tasks you asked for:", "assistant chatter, not a task"),
        ("The answer to the question is in the first task.", "assistant chatter, not a task"),
    ],
)
def test_self_instruct_filters(text, reason):
    assert rejection_reason(text, 4, 150, BANNED_KEYWORDS) == reason


def test_split_instructions():
    text = "Write a limerick about cats.\nTask 10: Explain tides simply.\n11. Name two rivers in Asia.\n\n- Give a tip."
    assert split_instructions(text) == [
        "Write a limerick about cats.",
        "Explain tides simply.",
        "Name two rivers in Asia.",
        "Give a tip.",
    ]


def _stage(kind, settings=None, seed=0):
    resources = StageResources(BUILTIN / "prompts", BUILTIN / "constitutions", seed, None)
    return stage_class(kind)(kind, settings or {}, resources)


def test_evol_operation_choice_is_seeded():
    from synthforge.records import Record

    records = [Record(id=f"r{i}", prompt=t) for i, t in enumerate(TASKS)]
    first = [_stage("evol_instruct").operation(r, 0) for r in records]
    assert first == [_stage("evol_instruct").operation(r, 0) for r in records]
    assert first != [_stage("evol_instruct", seed=1).operation(r, 0) for r in records]
    assert first != [_stage("evol_instruct").operation(r, 1) for r in records]
    assert len(set(first)) >= 4  # the draw covers the operations
    only = _stage("evol_instruct", {"operations": ["breadth"]})
    assert {only.operation(r, 0) for r in records} == {"breadth"}


@pytest.mark.parametrize(
    ("evolved", "reason"),
    [
        ("Explain why the sky is blue to a ten-year-old, using an analogy with a prism and one experiment.", None),
        ("Explain why the sky is blue to a ten-year-old.", "no information gain"),
        ("Sorry, I can't rewrite that.", "an apology instead of a prompt"),
        ("#Rewritten Prompt#: explain the sky", "copies the rewriting prompt's wording"),
        ("... what is the ? and how", "only punctuation and stop words"),
        ("Immortal.", "too short to be a prompt"),
        ("Explain the colour of the sky.", "in-depth evolution shorter than the original"),
    ],
)
def test_evol_elimination_rules(evolved, reason):
    got = elimination_reason("Explain why the sky is blue to a ten-year-old.", evolved, operation="deepen")
    assert (got is None) if reason is None else got.startswith(reason)


LLAMA3 = (
    "{{ '<|begin_of_text|>' }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def test_magpie_pre_query_text_for_chatml_and_llama3(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def render(conversation):
        return tokenizer.apply_chat_template(conversation, tokenize=False)

    assert pre_query_text(render) == "<|im_start|>user\n"
    assert pre_query_text(render, "Be brief.") == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
    tokenizer.chat_template = LLAMA3
    assert pre_query_text(render) == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    assert pre_query_text(render, "Be brief.") == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
    )


def _pipeline(project, name: str, teacher: str, stage: str, seeds: str | None = None):
    """Write pipelines/<name>.yaml with one stage (a YAML line like "magpie: {...}") over the project copy."""
    path = project / "pipelines" / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nteacher: {{{teacher}}}\n"
        + (f"seeds: {{{seeds}}}\n" if seeds else "")
        + f"stages:\n  - {stage}\n"
        + "paths: {prompts: ../prompts, constitutions: ../constitutions}\n",
        encoding="utf-8",
    )
    return path


def _magpie_pipeline(project, teacher_dir):
    return _pipeline(
        project,
        "mp",
        f'model: "{teacher_dir}", batch_size: 4',
        "magpie: {num_prompts: 5, min_words: 1, sampling: {max_new_tokens: 8}}",
    )


def test_magpie_stage_writes_prompts_without_seeds(project, tiny_model_dir):
    result = run_pipeline(
        load_pipeline(_magpie_pipeline(project, tiny_model_dir)), RunOptions(out_dir=project / "o"), log=lambda _: None
    )
    kept = [json.loads(x) for x in (project / "o" / "trace.jsonl").read_text().splitlines()]
    dropped = [json.loads(x) for x in (project / "o" / "dropped.jsonl").read_text().splitlines()]
    assert len(kept) + len(dropped) == 5 and result.manifest["funnel"][0] == {"step": "seeds", "records": 0}
    for record in kept + [d["record"] for d in dropped]:
        assert record["meta"]["origin"] == "magpie" and record["steps"][0]["role"] == "query"


def ChatOnlyTeacher() -> ScriptedTeacher:  # noqa: N802
    """A teacher with generate/score only (like an OpenAI-compatible chat endpoint): no raw completion."""
    return ScriptedTeacher(lambda conversation: "x", identity={"backend": "chat-only"})


def test_magpie_says_clearly_when_a_backend_cannot(project, tiny_model_dir):
    spec = load_pipeline(_magpie_pipeline(project, tiny_model_dir))
    with pytest.raises(UserError, match="backend 'chat-only' can't"):
        run_pipeline(spec, RunOptions(out_dir=project / "o"), teacher=ChatOnlyTeacher(), log=lambda _: None)


def test_pipeline_without_seeds_needs_a_generating_first_stage(project):
    path = project / "pipelines" / "bad.yaml"
    path.write_text("name: bad\nstages:\n  - respond: {}\n", encoding="utf-8")
    with pytest.raises(UserError, match="seeds: required unless the first stage writes its own prompts"):
        load_pipeline(path)


LIST_REPLY = (
    "Write a limerick about a cat who loves rain.\n"
    "Task 10: Write a limerick about a cat who loves the rain.\n"  # too similar to the one above
    "Draw a map of your town.\n"  # banned keyword
    "Hi.\n"  # too short
    "Explain how bees make honey, step by step.\n"
    "List five uses of baking soda around the house."
)


def ListTeacher() -> ScriptedTeacher:  # noqa: N802
    """Answers every Self-Instruct request with the same numbered list (deterministic pool growth)."""
    return ScriptedTeacher(lambda conversation: Completion(LIST_REPLY, "stop", 10, 40))


def test_self_instruct_grows_the_pool_and_ledgers_every_rejection(project, tiny_model_dir):
    path = _pipeline(
        project,
        "si",
        f'model: "{tiny_model_dir}"',
        "self_instruct: {target: 3, requests_per_round: 2, max_rounds: 3, keep_seeds: true}",
        "path: seeds/tasks.jsonl, field: instruction",
    )
    teacher = ListTeacher()
    result = run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o"), teacher=teacher, log=lambda _: None)
    kept = [json.loads(x) for x in (project / "o" / "trace.jsonl").read_text().splitlines()]
    dropped = [json.loads(x) for x in (project / "o" / "dropped.jsonl").read_text().splitlines()]
    new = [r["prompt"] for r in kept if r["meta"].get("origin") == "self_instruct"]
    assert new == [
        "Write a limerick about a cat who loves rain.",
        "Explain how bees make honey, step by step.",
        "List five uses of baking soda around the house.",
    ]
    assert len(kept) == 40 + 3 and teacher.calls == 2  # one round of two requests reached the target
    reasons = [d["reason"] for d in dropped]
    assert any(r.startswith("too similar (ROUGE-L") for r in reasons)
    assert "banned keyword ('map')" in reasons and "too short (1 < 4 words)" in reasons
    examples = kept[-1]["steps"][0]["examples"]
    assert len(examples) == 8 and set(examples) <= set(TASKS)
    assert result.manifest["stages"][0]["report"]["dropped"] == len(dropped)


def _evolve(conversation) -> Completion:
    """Replies to each Evol-Instruct request by a rule on the instruction it carries."""
    text = conversation[-1]["content"]
    if "Name two rivers" in text:
        return Completion("Sorry, I can't do that.", "stop", 5, 12)  # always eliminated
    instruction = text.rsplit("Given prompt:\n", 1)[1].strip()
    reply = f"Here is the rewritten prompt: {instruction} Use exactly three examples and cite one source."
    return Completion(reply, "stop", 5, 12)


def EvolTeacher() -> ScriptedTeacher:  # noqa: N802
    return ScriptedTeacher(_evolve)


def test_evol_instruct_stage_evolves_keeps_history_and_drops_total_failures(project, tiny_model_dir):
    seeds = project / "pipelines" / "seeds" / "two.jsonl"
    seeds.write_text('{"prompt": "Explain tides simply."}\n{"prompt": "Name two rivers in Asia."}\n', encoding="utf-8")
    path = _pipeline(
        project,
        "evol",
        f'model: "{tiny_model_dir}"',
        "evol_instruct: {rounds: 2, operations: [constraints, reasoning]}",
        "path: seeds/two.jsonl",
    )
    run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o"), teacher=EvolTeacher(), log=lambda _: None)
    kept = [json.loads(x) for x in (project / "o" / "trace.jsonl").read_text().splitlines()]
    dropped = [json.loads(x) for x in (project / "o" / "dropped.jsonl").read_text().splitlines()]
    assert len(kept) == 1 and len(dropped) == 1
    record = kept[0]
    suffix = " Use exactly three examples and cite one source."
    assert record["prompt"] == "Explain tides simply." + suffix * 2  # evolved twice, preamble cleaned
    assert record["meta"] == {**record["meta"], "evolved_from": "Explain tides simply.", "evolutions": 2}
    assert [s["operation"] in ("constraints", "reasoning") for s in record["steps"]] == [True, True]
    assert record["response"] is None
    assert dropped[0]["reason"] == "every evolution eliminated (last: an apology instead of a prompt)"
    assert [s["eliminated"] for s in dropped[0]["record"]["steps"]] == ["an apology instead of a prompt"] * 2


def _shrink(conversation) -> Completion:
    """Every in-depth request gets a shorter prompt, every breadth request a five-word one."""
    breadth = "brand-new prompt" in conversation[-1]["content"]
    return Completion("Name five rivers of Asia." if breadth else "Describe ocean tides briefly please.", "stop", 5, 5)


def ShrinkingTeacher() -> ScriptedTeacher:  # noqa: N802
    return ScriptedTeacher(_shrink)


def test_evol_instruct_stage_applies_min_words_and_the_shrinking_rule(project, tiny_model_dir):
    """Through the stage (not the bare function): its min_words setting and the in-depth shrinking rule act."""
    seeds = project / "pipelines" / "seeds" / "one.jsonl"
    seeds.write_text('{"prompt": "Explain the tides and the moon to a curious child in simple words."}\n')
    for operations, min_words, reason in (
        ("[deepen]", 3, "in-depth evolution shorter than the original"),
        ("[breadth]", 6, "too short to be a prompt"),
    ):
        path = _pipeline(
            project,
            "evol",
            f'model: "{tiny_model_dir}"',
            f"evol_instruct: {{rounds: 1, operations: {operations}, min_words: {min_words}}}",
            "path: seeds/one.jsonl",
        )
        out = project / f"o-{min_words}"
        run_pipeline(load_pipeline(path), RunOptions(out_dir=out), teacher=ShrinkingTeacher(), log=lambda _: None)
        dropped = [json.loads(x) for x in (out / "dropped.jsonl").read_text().splitlines()]
        assert len(dropped) == 1 and dropped[0]["reason"].startswith(f"every evolution eliminated (last: {reason}")


TOPICS = ["rivers", "volcanoes", "chess", "bread", "tides", "bridges", "comets", "violins", "glaciers", "owls"]


def CountingListTeacher(fail_from: int | None = None) -> ScriptedTeacher:  # noqa: N802
    """Each request gets one new, distinct instruction; can be told to fail from a given call on."""
    teacher = ScriptedTeacher()

    def reply(conversation) -> Completion:
        topic = TOPICS[teacher.calls % len(TOPICS)]
        return Completion(f"Describe {teacher.calls} surprising facts about {topic}.", "stop", 3, 9)

    def fail(conversations):
        if fail_from is not None and teacher.calls >= fail_from:
            return KeyboardInterrupt()  # stands in for kill -9 in the middle of the stage
        return None

    teacher.reply, teacher.fail = reply, fail
    return teacher


def test_self_instruct_resumes_inside_the_stage_without_repeating_rounds(project, tiny_model_dir):
    path = _pipeline(
        project,
        "si",
        f'model: "{tiny_model_dir}"',
        "self_instruct: {target: 6, requests_per_round: 2, max_rounds: 10}",
        "path: seeds/tasks.jsonl, field: instruction",
    )
    spec, options = load_pipeline(path), RunOptions(out_dir=project / "o")
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(spec, options, teacher=CountingListTeacher(fail_from=4), log=lambda _: None)
    assert len(list((project / "o" / "checkpoints").glob("*.journal.jsonl"))) == 1  # two rounds kept
    resumed = CountingListTeacher()
    resumed.calls = 4  # the same replies the killed run would have got next
    run_pipeline(spec, options, teacher=resumed, log=lambda _: None)
    assert resumed.calls == 6  # only round 3 asked; rounds 1-2 replayed from the journal
    uninterrupted = CountingListTeacher()
    run_pipeline(spec, RunOptions(out_dir=project / "fresh"), teacher=uninterrupted, log=lambda _: None)
    assert (project / "o" / "trace.jsonl").read_text() == (project / "fresh" / "trace.jsonl").read_text()
    assert not list((project / "o" / "checkpoints").glob("*.journal.jsonl"))  # discarded once complete


# -- Self-Instruct and Evol-Instruct ask for JSON under a schema when the teacher can constrain its output --------
class StructuredTeacher(ScriptedTeacher):
    """A scripted teacher that says it constrains output to a schema; it keeps the sampling params it was sent."""

    def __init__(self, reply):
        super().__init__(reply, capabilities=frozenset({GENERATE, STRUCTURED}))
        self.params: list = []

    def generate(self, conversations, params):
        self.params.extend(per_conversation(params, len(conversations)))
        return super().generate(conversations, params)


def test_self_instruct_reads_tasks_from_json_when_the_teacher_constrains_output(project, tiny_model_dir):
    answers = iter(
        [
            '{"tasks": ["1. Write a limerick about a cat who loves rain.", '
            '"Explain how bees make honey, step by step."]}',
            '{"tasks": ["List five uses of baking soda around the house.", "Describe a sunrise over the ocean in deta',
        ]
    )
    teacher = StructuredTeacher(lambda conversation: next(answers))
    path = _pipeline(
        project,
        "si",
        f'model: "{tiny_model_dir}"',
        "self_instruct: {target: 3, requests_per_round: 2, max_rounds: 1}",
        "path: seeds/tasks.jsonl, field: instruction",
    )
    run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o"), teacher=teacher, log=lambda _: None)
    kept = [json.loads(x)["prompt"] for x in (project / "o" / "trace.jsonl").read_text().splitlines()]
    assert kept == [  # numbering removed; the answer cut off mid-list keeps its complete task
        "Write a limerick about a cat who loves rain.",
        "Explain how bees make honey, step by step.",
        "List five uses of baking soda around the house.",
    ]
    assert {p.json_schema["required"][0] for p in teacher.params} == {"tasks"}
    assert all('{"tasks"' in c[-1]["content"] and "Task 9:" not in c[-1]["content"] for c in teacher.seen)


def test_evol_instruct_reads_the_prompt_from_json_and_eliminates_an_answer_without_one(project, tiny_model_dir):
    seeds = project / "pipelines" / "seeds" / "two.jsonl"
    seeds.write_text('{"prompt": "Explain tides simply."}\n{"prompt": "Name two rivers in Asia."}\n', encoding="utf-8")

    def reply(conversation):
        if "Name two rivers" in conversation[-1]["content"]:
            return '{"prompt": "Name two rivers in Asia and compare'  # cut off: no prompt to read
        return '{"prompt": "Explain tides simply, using the moon, the sun and one worked example of a spring tide."}'

    teacher = StructuredTeacher(reply)
    path = _pipeline(
        project,
        "evol",
        f'model: "{tiny_model_dir}"',
        "evol_instruct: {rounds: 1, operations: [deepen]}",
        "path: seeds/two.jsonl",
    )
    run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o"), teacher=teacher, log=lambda _: None)
    kept = [json.loads(x) for x in (project / "o" / "trace.jsonl").read_text().splitlines()]
    dropped = [json.loads(x) for x in (project / "o" / "dropped.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in kept] == [
        "Explain tides simply, using the moon, the sun and one worked example of a spring tide."
    ]
    assert dropped[0]["reason"].startswith("every evolution eliminated (last: no rewritten prompt in the JSON answer")
    assert {p.json_schema["required"][0] for p in teacher.params} == {"prompt"}


def test_structured_answers_are_chosen_by_the_teacher_and_part_of_the_fingerprint(tiny_model_dir):
    def build(capabilities, mode="auto"):
        resources = StageResources(BUILTIN / "prompts", BUILTIN / "constitutions", 0, None, capabilities)
        return stage_class("evol_instruct")("evol", {"structured": mode}, resources)

    constrained, free = build(frozenset({GENERATE, STRUCTURED})), build(frozenset({GENERATE}))
    assert constrained.json_answers and constrained.config.sampling.json_schema is not None
    assert free.json_answers is False and free.config.sampling.json_schema is None
    assert constrained.fingerprint() != free.fingerprint()
    assert build(frozenset({GENERATE, STRUCTURED}), "text").json_answers is False
    assert STRUCTURED in build(frozenset({GENERATE}), "json").needs  # a teacher without it: a spec error


def test_structured_json_on_a_teacher_that_cant_constrain_is_one_line(project, tiny_model_dir):
    path = _pipeline(
        project,
        "evol",
        f'model: "{tiny_model_dir}", transformers: {{continuous_batching: false}}',
        "evol_instruct: {structured: json}",
        "path: seeds/tasks.jsonl, field: instruction",
    )
    with pytest.raises(UserError, match="structured output.*continuous_batching: true"):
        run_pipeline(load_pipeline(path), RunOptions(out_dir=project / "o"), log=lambda _: None)


def test_self_instruct_killed_for_real_resumes_without_asking_the_server_again(project, tmp_path):
    """A real SIGKILL of `synthforge generate` inside Self-Instruct (a whole-dataset stage), driven by a server
    that counts what it is asked: the rerun asks only what the killed run had not finished (its journal), and the
    output is byte-identical to an uninterrupted run against the same server."""
    import hashlib
    import os
    import signal

    from tests.fault_server import FaultServer, chat_completion

    child: dict = {}
    kill_at = [None]

    def script(number, body):
        if kill_at[0] is not None and number == kill_at[0]:
            os.kill(child["process"].pid, signal.SIGKILL)  # the run is killed while waiting for this answer
        digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()
        topic = TOPICS[int(digest, 16) % len(TOPICS)]
        task = f"Describe {int(digest[:6], 16)} surprising facts about {topic}."
        return 200, {}, chat_completion(body, json.dumps({"tasks": [task], "ok": True}))

    def run(out: Path, server: FaultServer) -> subprocess.CompletedProcess:
        path = _pipeline(
            project,
            "si",
            f"model: m, backend: openai, openai: {{base_url: '{server.url}', max_concurrency: 1}}",
            "self_instruct: {target: 6, requests_per_round: 2, max_rounds: 10}",
            "path: seeds/tasks.jsonl, field: instruction",
        )
        command = [sys.executable, "-m", "synthforge.cli.main", "generate", str(path), "--out", str(out)]
        child["process"] = subprocess.Popen([*command, "--no-progress"], stderr=subprocess.PIPE, text=True)
        _, err = child["process"].communicate(timeout=300)
        return subprocess.CompletedProcess(command, child["process"].returncode, "", err)

    with FaultServer(script) as server:
        fresh = run(tmp_path / "fresh", server)
        assert fresh.returncode == 0, fresh.stderr
        uninterrupted = len(server.requests)
        probes = int('"ok"' in json.dumps(server.requests[0].get("response_format")))  # a schema probe comes first
        assert uninterrupted - probes > 4  # more than two rounds of two requests (one at a time)
        server.requests.clear()
        kill_at[0] = probes + 4  # two rounds answered, then the kill while the third round asks
        assert run(tmp_path / "killed", server).returncode == -signal.SIGKILL
        asked_before_kill = len(server.requests)
        kill_at[0] = None
        server.requests.clear()
        resumed = run(tmp_path / "killed", server)
        assert resumed.returncode == 0, resumed.stderr
    assert asked_before_kill == probes + 5
    assert len(server.requests) == uninterrupted - 4  # the two journaled rounds are never asked again
    assert (tmp_path / "killed" / "trace.jsonl").read_bytes() == (tmp_path / "fresh" / "trace.jsonl").read_bytes()


@pytest.mark.slow
def test_magpie_killed_between_chunks_resumes_without_asking_again(project, tiny_model_dir, tmp_path):
    """A real SIGKILL while Magpie asks its second chunk of queries: the rerun asks only the chunks not journaled,
    and its output is byte-identical to an uninterrupted run."""
    from synthforge.stages import magpie

    path = _pipeline(
        project,
        "mp",
        f'model: "{tiny_model_dir}", batch_size: 8',
        f"magpie: {{num_prompts: {2 * magpie.CHUNK + 3}, min_words: 1, sampling: {{max_new_tokens: 4}}}}",
    )
    script = f"""
import os, signal, sys
from synthforge.teachers.backends import transformers as backend
real = backend.TransformersTeacher.complete
def complete(self, texts, params):
    print("chunk", len(texts), file=sys.stderr, flush=True)
    if os.environ.get("KILL") and os.environ.get("ASKED") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    os.environ["ASKED"] = "1"
    return real(self, texts, params)
backend.TransformersTeacher.complete = complete
from synthforge.cli.main import main
main(["generate", {str(path)!r}, "--out", os.environ["OUT"], "--no-progress"])
"""

    def run(out, kill=False):
        env = {**__import__("os").environ, "OUT": str(out), "OMP_NUM_THREADS": "1"}
        env.pop("ASKED", None)
        if kill:
            env["KILL"] = "1"
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)

    assert run(tmp_path / "killed", kill=True).returncode == -9  # killed asking its second chunk
    resumed = run(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("chunk ") == 2  # the first chunk came from the journal
    fresh = run(tmp_path / "fresh")
    assert fresh.stderr.count("chunk ") == 3
    for name in ("trace.jsonl", "dropped.jsonl"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name
