"""The vLLM backend. vLLM cannot be installed on our machines (no CUDA GPU here, nor on the lent GPU machine),
so the translation to and from its objects is tested as pure functions, and VLLMTeacher is driven against a
stand-in `vllm` module that records calls and answers in vLLM's shapes (RequestOutput / CompletionOutput /
Logprob). That stand-in is the only mock in the suite, for the one dependency that cannot run here. The
integration test at the end runs only where vllm imports and a GPU is present.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from synthforge.teachers.backends.vllm import (
    VLLMSettings,
    VLLMTeacher,
    continuation_logprob,
    engine_kwargs,
    parse_request_output,
    prefix_order,
    sampling_kwargs,
    score_kwargs,
)
from synthforge.teachers.base import SamplingParams


@dataclass
class Logprob:  # vllm.logprobs.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:  # vllm.outputs.CompletionOutput
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[dict[int, Logprob]] | None = None


@dataclass
class RequestOutput:  # vllm.outputs.RequestOutput
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None


def test_sampling_params_translation_always_sets_max_tokens():
    ours = SamplingParams(temperature=0.3, top_p=0.9, max_new_tokens=77, n=2, stop=("###",), seed=5, logprobs=3)
    assert sampling_kwargs(ours) == {
        "n": 2,
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 77,
        "seed": 5,
        "stop": ["###"],
        "logprobs": 3,
    }
    assert sampling_kwargs(SamplingParams())["max_tokens"] == 256  # never vLLM's default of 16
    assert score_kwargs() == {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}


def test_engine_arguments_from_the_yaml():
    settings = VLLMSettings(
        tensor_parallel_size=4, gpu_memory_utilization=0.8, max_model_len=8192, extra={"quantization": "fp8"}
    )
    kwargs = engine_kwargs("/models/llama", settings)
    assert kwargs == {
        "model": "/models/llama",
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.8,
        "enable_prefix_caching": True,
        "dtype": "auto",
        "seed": 0,
        "max_model_len": 8192,
        "quantization": "fp8",
    }


def test_request_outputs_become_completions():
    output = RequestOutput(
        prompt_token_ids=[1, 2, 3],
        outputs=[
            CompletionOutput(
                0,
                " Hello ",
                [7, 8],
                "stop",
                [{7: Logprob(-0.1, 1, "Hel"), 9: Logprob(-2.5, 2, "X")}, {8: Logprob(-0.2, 1, "lo")}],
            ),
            CompletionOutput(1, "Cut", [5, 6, 7], "length"),
        ],
    )
    first, second = parse_request_output(output)
    assert (first.text, first.finish_reason, first.prompt_tokens, first.completion_tokens) == ("Hello", "stop", 3, 2)
    assert first.logprobs[0] == {"token": "Hel", "logprob": -0.1, "top": [["Hel", -0.1], ["X", -2.5]]}
    assert (second.finish_reason, second.completion_tokens, second.logprobs) == ("length", 3, None)


def test_continuation_logprob_sums_the_continuation_positions():
    prompt_logprobs = [None, {5: Logprob(-1.0)}, {6: Logprob(-0.5)}, {7: Logprob(-0.25)}]
    assert continuation_logprob(prompt_logprobs, [4, 5, 6, 7], start=2) == -0.75


def test_shared_prefixes_are_ordered_together():
    system = {"role": "system", "content": "few-shot"}
    convs = [
        [{"role": "user", "content": "b"}],
        [system, {"role": "user", "content": "x"}],
        [{"role": "user", "content": "a"}],
        [system, {"role": "user", "content": "y"}],
    ]
    order = prefix_order(convs)
    assert abs(order.index(1) - order.index(3)) == 1


class _Tokenizer:
    def apply_chat_template(self, conversation, add_generation_prompt=False, tokenize=False):
        text = "".join(f"<{m['role']}>{m['content']}" for m in conversation)
        return text + ("<assistant>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


class _LLM:
    """Stands in for vllm.LLM: records calls, answers deterministically in vLLM's shapes."""

    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []
        _LLM.instances.append(self)

    def get_tokenizer(self):
        return _Tokenizer()

    def chat(self, messages, sampling_params, use_tqdm=True):
        self.calls.append(("chat", messages, sampling_params))
        return [
            RequestOutput(
                [1] * len(m),
                [CompletionOutput(k, f"re:{m[-1]['content']}#{k}", [1, 2], "stop") for k in range(p.kwargs["n"])],
            )
            for m, p in zip(messages, sampling_params, strict=True)
        ]

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append(("generate", prompts, sampling_params))
        outputs = []
        for prompt in prompts:
            ids = prompt["prompt_token_ids"] if isinstance(prompt, dict) else [ord(c) for c in prompt]
            logprobs = [None] + [{t: Logprob(-0.01 * t)} for t in ids[1:]]
            outputs.append(RequestOutput(ids, [CompletionOutput(0, "z", [1], "length")], logprobs))
        return outputs


@dataclass
class _SamplingParams:
    kwargs: dict = field(default_factory=dict)

    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.SimpleNamespace(LLM=_LLM, SamplingParams=_SamplingParams)
    monkeypatch.setitem(sys.modules, "vllm", module)
    _LLM.instances.clear()
    return module


def test_vllm_teacher_hands_vllm_the_whole_chunk_and_maps_results_back(fake_vllm):
    teacher = VLLMTeacher("/models/x", VLLMSettings(max_model_len=4096), {"backend": "vllm"})
    llm = _LLM.instances[0]
    assert llm.kwargs["max_model_len"] == 4096 and llm.kwargs["model"] == "/models/x"
    convs = [[{"role": "user", "content": c}] for c in ("b", "a", "c")]
    params = [SamplingParams(seed=i, n=1 + (i == 2)) for i in range(3)]
    out = teacher.generate(convs, params)
    assert [[c.text for c in r] for r in out] == [["re:b#0"], ["re:a#0"], ["re:c#0", "re:c#1"]]
    ((kind, messages, sent),) = llm.calls
    assert kind == "chat" and len(messages) == 3  # one call for the whole chunk: vLLM batches it
    assert [p.kwargs["seed"] for p in sent] == [1, 0, 2] and all(p.kwargs["max_tokens"] == 256 for p in sent)


def test_vllm_teacher_scores_continuation_tokens_from_prompt_logprobs(fake_vllm):
    teacher = VLLMTeacher("m", VLLMSettings(), {})
    conversation = [{"role": "user", "content": "q"}]
    scores = teacher.score([conversation], [["(A)", "(B)"]])
    expected = [-0.01 * sum(ord(c) for c in option) for option in ("(A)", "(B)")]
    assert scores[0] == pytest.approx(expected)
    _, prompts, params = _LLM.instances[0].calls[0]
    assert params.kwargs == score_kwargs() and prompts[0]["prompt_token_ids"][-3:] == [ord(c) for c in "(A)"]


def test_without_vllm_installed_the_backend_says_how_to_get_it(monkeypatch):
    from synthforge.errors import UserError

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(UserError, match=r"pip install 'synthforge\[vllm\]'"):
        VLLMTeacher("m", VLLMSettings(), {})


def test_vllm_integration_on_a_gpu(tiny_model_dir):
    vllm = pytest.importorskip("vllm", reason="vLLM is not installed (it can't be here: no CUDA GPU)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    del vllm
    teacher = VLLMTeacher(str(tiny_model_dir), VLLMSettings(gpu_memory_utilization=0.3), {})
    out = teacher.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=4, seed=1))
    assert out[0][0].completion_tokens <= 4


# -- what we send exists in the vLLM versions we support ----------------------------------------------------------
API = json.loads((Path(__file__).parents[1] / "data" / "vllm_api.json").read_text())["versions"]


class _StrictLLM(_LLM):
    """The stand-in with vLLM's own parameter lists (of ``version``): an argument vLLM lacks is a TypeError."""

    api: dict = {}

    def __init__(self, **kwargs):
        _refuse_unknown("vllm.LLM / EngineArgs", kwargs, self.api["LLM.__init__"] + self.api["EngineArgs"])
        super().__init__(**kwargs)

    def chat(self, messages, sampling_params, **kwargs):
        _refuse_unknown("LLM.chat", kwargs, self.api["LLM.chat"])
        return super().chat(messages, sampling_params)

    def generate(self, prompts, sampling_params, **kwargs):
        _refuse_unknown("LLM.generate", kwargs, self.api["LLM.generate"])
        return super().generate(
            prompts, [sampling_params] * len(prompts) if not isinstance(sampling_params, list) else sampling_params
        )


def _refuse_unknown(where: str, kwargs: dict, known: list[str]) -> None:
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise TypeError(f"{where} has no parameter {unknown[0]!r}")


@pytest.mark.parametrize("version", sorted(API, key=lambda v: tuple(map(int, v.split(".")))))
def test_every_argument_we_send_exists_in_the_supported_vllm_versions(version, monkeypatch):
    """The lowest supported (0.12), the first with thinking budgets (0.19) and the highest (0.34): their parameter
    lists were read from vLLM's sources (tests/data/vllm_api.json)."""
    import synthforge.teachers.backends.vllm as backend
    from synthforge.teachers.base import THINKING_BUDGET

    api = API[version]
    numbers = tuple(int(x) for x in version.split(".")[:2])
    monkeypatch.setattr(backend, "installed_version", lambda: numbers)

    class Params(_SamplingParams):
        def __init__(self, **kwargs):
            _refuse_unknown("SamplingParams", kwargs, api["SamplingParams"])
            super().__init__(**kwargs)

    class Structured:
        def __init__(self, **kwargs):
            _refuse_unknown("StructuredOutputsParams", kwargs, api["StructuredOutputsParams"])

    module = types.SimpleNamespace(LLM=type("LLM", (_StrictLLM,), {"api": api}), SamplingParams=Params)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", types.SimpleNamespace(StructuredOutputsParams=Structured))
    budget = THINKING_BUDGET in backend.vllm_capabilities()
    assert budget == (numbers >= backend.THINKING_BUDGET_SINCE)
    teacher = VLLMTeacher("/models/x", VLLMSettings(max_model_len=4096, seed=3), {"backend": "vllm"})
    everything = SamplingParams(
        n=2,
        temperature=0.7,
        top_p=0.9,
        max_new_tokens=9,
        seed=1,
        stop=("x",),
        logprobs=3,
        json_schema={"type": "object"},
        max_reasoning_tokens=5 if budget else None,
    )
    conversation = [{"role": "user", "content": "q"}]
    assert len(teacher.generate([conversation], everything)[0]) == 2
    assert teacher.complete(["text"], SamplingParams(max_new_tokens=2))
    assert teacher.score([conversation], [["(A)", "(B)"]])
