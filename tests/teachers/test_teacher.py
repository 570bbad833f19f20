"""The transformers teacher on a tiny random Llama: batching, seeding, stops, finish reasons, scores."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from synthforge.errors import UserError
from synthforge.models import PackedLinear, packs_weights, resolve_model
from synthforge.teachers.backends.transformers import TransformersSettings, load_teacher
from synthforge.teachers.base import SamplingParams, Teacher
from synthforge.teachers.config import TeacherSpec
from synthforge.teachers.factory import teacher_identity

CONVS = [
    [{"role": "user", "content": "hello"}],
    [{"role": "user", "content": "a much longer question about foxes and dogs and revisions"}],
    [
        {"role": "user", "content": "why?"},
        {"role": "assistant", "content": "because"},
        {"role": "user", "content": "ok"},
    ],
]


def test_implements_protocol_and_identity(tiny_teacher):
    assert isinstance(tiny_teacher, Teacher)
    identity = tiny_teacher.identity
    assert identity["backend"] == "transformers" and identity["dtype"] == "float32"


def test_generate_returns_n_completions_with_counts(tiny_teacher):
    out = tiny_teacher.generate(CONVS, SamplingParams(max_new_tokens=5, n=3, seed=1))
    assert [len(c) for c in out] == [3, 3, 3]
    for conv, completions in zip(CONVS, out, strict=True):
        prompt_len = len(tiny_teacher.encode_chat(conv))
        for completion in completions:
            assert completion.prompt_tokens == prompt_len
            assert 1 <= completion.completion_tokens <= 5
            assert completion.finish_reason in ("stop", "length")


def test_output_depends_on_seed_not_batch_composition(tiny_teacher):
    params = SamplingParams(temperature=1.0, max_new_tokens=8, seed=42)
    alone = tiny_teacher.generate([CONVS[1]], params)[0]
    together = tiny_teacher.generate([CONVS[0], CONVS[1], CONVS[2]], params)[1]
    assert alone == together
    other_seed = tiny_teacher.generate([CONVS[1]], params.with_seed(43))[0]
    assert other_seed != alone


def test_greedy_is_deterministic_and_matches_plain_generate(tiny_teacher):
    params = SamplingParams(temperature=0.0, max_new_tokens=6)
    ours = tiny_teacher.generate([CONVS[0]], params)[0][0]
    ids = torch.tensor([tiny_teacher.encode_chat(CONVS[0])])
    plain = tiny_teacher.model.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    expected = tiny_teacher.tokenizer.decode(plain[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert ours.text == expected and ours.finish_reason == "length"


@pytest.mark.skipif(not packs_weights(torch.device("cpu")), reason="this torch has no oneDNN")
def test_packed_linear_rows_do_not_depend_on_the_rows_beside_them():
    torch.manual_seed(0)
    for out_features, in_features in ((48, 32), (32, 1536), (96, 576)):
        linear = torch.nn.Linear(in_features, out_features, bias=out_features == 48)
        packed = PackedLinear(linear)
        rows = torch.randn(9, 1, in_features)  # nine rows of one decoding step
        with torch.inference_mode():
            together = packed(rows)
            assert torch.allclose(together, linear(rows), atol=1e-5)
            for m in range(1, 9):  # the first rows, computed m at a time, give the same bits
                assert torch.equal(packed(rows[:m]), together[:m])


def test_the_teacher_runs_on_packed_weights_unless_told_not_to(tiny_model_dir):
    if not packs_weights(torch.device("cpu")):
        pytest.skip("this torch has no oneDNN")
    packed = load_teacher(str(tiny_model_dir), batch_size=4, device="cpu")
    plain = load_teacher(
        str(tiny_model_dir), batch_size=4, device="cpu", settings=TransformersSettings(packed_weights=False)
    )
    layers = lambda t: {type(m).__name__ for m in t.model.modules()} & {"Linear", "PackedLinear"}  # noqa: E731
    assert layers(packed) == {"PackedLinear"} and layers(plain) == {"Linear"}
    ids = torch.tensor([packed.encode_chat(CONVS[1])])
    with torch.inference_mode():
        assert torch.allclose(packed.model(input_ids=ids).logits, plain.model(input_ids=ids).logits, atol=1e-4)
    spec = TeacherSpec(model=str(tiny_model_dir), device="cpu")  # the kernel is part of the cache key
    assert teacher_identity(spec)["matmul"] == "onednn-packed" and teacher_identity(spec) == packed.identity
    assert teacher_identity(replace(spec, options=TransformersSettings(packed_weights=False))) == plain.identity
    assert "matmul" not in plain.identity
    packed.close()
    plain.close()


def test_batch_size_smaller_than_request_count(tiny_model_dir):
    teacher = load_teacher(str(tiny_model_dir), batch_size=1, device="cpu")
    out = teacher.generate(CONVS, SamplingParams(max_new_tokens=3, n=2, seed=5))
    assert [len(c) for c in out] == [2, 2, 2]


def test_stop_string_cuts_text_and_sets_reason(tiny_teacher):
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=11)
    full = tiny_teacher.generate([CONVS[0]], params)[0][0].text
    assert len(full) > 4
    stop = full[2:4]
    cut = tiny_teacher.generate([CONVS[0]], SamplingParams(temperature=1.0, max_new_tokens=12, seed=11, stop=(stop,)))[
        0
    ][0]
    assert cut.finish_reason == "stop" and stop not in cut.text and full.startswith(cut.text)


def test_eos_gives_stop(tiny_teacher):
    # Force EOS by boosting its logit: the completion must end with finish_reason "stop" and no text.
    lm_head_bias = torch.zeros(tiny_teacher.model.config.vocab_size)
    lm_head_bias[tiny_teacher.tokenizer.eos_token_id] = 1e4
    handle = tiny_teacher.model.lm_head.register_forward_hook(lambda m, i, o: o + lm_head_bias)
    try:
        out = tiny_teacher.generate([CONVS[0]], SamplingParams(max_new_tokens=5, seed=1))[0][0]
    finally:
        handle.remove()
    assert out.finish_reason == "stop" and out.text == "" and out.completion_tokens == 1


def test_score_matches_manual_log_probabilities(tiny_teacher):
    conv = CONVS[0]
    candidates = ["A", "B) because"]
    scores = tiny_teacher.score([conv, conv], [candidates, candidates[:1]])
    prompt = tiny_teacher.encode_chat(conv)
    for cand, value in zip(candidates, scores[0], strict=True):
        target = tiny_teacher.tokenizer(cand, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + target])
        with torch.no_grad():
            logprobs = torch.log_softmax(tiny_teacher.model(ids).logits[0].float(), dim=-1)
        manual = sum(float(logprobs[len(prompt) - 1 + k, t]) for k, t in enumerate(target))
        assert value == pytest.approx(manual, abs=1e-4)
    assert scores[1][0] == pytest.approx(scores[0][0], abs=1e-4)


def test_missing_teacher_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        resolve_model(str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_row_noise_is_uniform_and_independent_of_other_rows():
    from synthforge.teachers.backends.transformers import row_uniforms

    seeds = torch.tensor([1, 2, (1 << 62) + 5], dtype=torch.int64)
    noise = row_uniforms(seeds, step=3, tokens=50_000)
    assert noise.shape == (3, 50_000) and float(noise.min()) > 0 and float(noise.max()) < 1
    assert abs(float(noise.mean()) - 0.5) < 0.01 and abs(float(noise.var()) - 1 / 12) < 0.002
    alone = row_uniforms(seeds[1:2], step=3, tokens=50_000)
    assert torch.equal(alone[0], noise[1])
    assert not torch.equal(row_uniforms(seeds, step=4, tokens=50_000), noise)


def test_sampling_follows_the_distribution():
    from synthforge.teachers.backends.transformers import SeededSampler

    probs = torch.tensor([0.6, 0.3, 0.1])
    rows = 20_000
    sampler = SeededSampler(torch.ones(rows), torch.ones(rows), torch.arange(rows, dtype=torch.int64))
    picked = sampler(None, probs.log().expand(rows, 3).clone()).argmax(dim=-1)
    freq = torch.bincount(picked, minlength=3).float() / rows
    assert torch.allclose(freq, probs, atol=0.015)
    top_p = SeededSampler(torch.ones(rows), torch.full((rows,), 0.5), torch.arange(rows, dtype=torch.int64))
    assert set(top_p(None, probs.log().expand(rows, 3).clone()).argmax(dim=-1).tolist()) == {0}


def test_partial_sort_sampler_picks_what_a_full_sort_picks():
    """The nucleus from the top 256 tokens (falling back to a full sort) draws exactly what sorting all does."""
    import torch

    from synthforge.teachers.backends.transformers import SeededSampler

    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        scores = torch.randn(8, 5000, generator=generator) * torch.rand(8, 1, generator=generator) * 8
        temperatures = torch.rand(8, generator=generator) * 1.2
        temperatures[0] = 0.0
        top_ps = torch.rand(8, generator=generator) * 0.5 + 0.5
        top_ps[1] = 1.0
        seeds = torch.randint(0, 2**62, (8,), generator=generator)
        partial = SeededSampler(temperatures, top_ps, seeds, top_k=256)(None, scores).argmax(-1)
        full = SeededSampler(temperatures, top_ps, seeds, top_k=10**9)(None, scores).argmax(-1)
        assert torch.equal(partial, full)


def test_teachers_declare_their_optional_abilities_as_protocols(tiny_teacher):
    """What the engine asks of a teacher beyond generating is a declared protocol (teachers/base.py), answered
    by the helpers beside it; nothing outside teachers/ looks at a teacher's attributes."""
    from synthforge.teachers.backends.openai import OpenAISettings, OpenAITeacher
    from synthforge.teachers.base import ContextLimited, Probing, Remote, is_remote, requests_at_once, window_of

    remote = OpenAITeacher("m", OpenAISettings(base_url="http://127.0.0.1:9/v1"), {"backend": "openai"})
    try:
        assert isinstance(remote, Remote) and isinstance(remote, Probing) and is_remote(remote)
        assert requests_at_once(remote) == remote.max_in_flight > 1
    finally:
        remote.close()
    assert isinstance(tiny_teacher, ContextLimited) and not isinstance(tiny_teacher, Remote)
    assert not is_remote(tiny_teacher) and window_of(tiny_teacher) == tiny_teacher.context_window > 0
