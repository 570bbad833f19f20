"""The continuous-batching decoder: the same tokens as static batches through ``model.generate``, rows that join
mid-generation without waiting for the batch to end, and lanes that share the work."""

from __future__ import annotations

from synthforge.teachers.backends.transformers import TransformersSettings, load_teacher
from synthforge.teachers.base import SamplingParams
from tests.conftest import wait_until

CONVS = [[{"role": "user", "content": f"question number {i} " + "and more words " * (i % 5)}] for i in range(10)]


def _params(max_new_tokens: int = 12) -> list[SamplingParams]:
    return [SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens, seed=100 + i) for i in range(len(CONVS))]


def test_continuous_batching_makes_the_tokens_static_batches_make(tiny_model_dir):
    static = load_teacher(str(tiny_model_dir), batch_size=4, settings=TransformersSettings(continuous_batching=False))
    assert static.decoder is None
    expected = static.generate(CONVS, _params())
    for lanes in (1, 2):
        teacher = load_teacher(str(tiny_model_dir), batch_size=3, settings=TransformersSettings(lanes=lanes))
        assert teacher.decoder is not None and teacher.decoder.lanes == lanes
        assert teacher.generate(CONVS, _params()) == expected
        teacher.close()


def test_a_request_arriving_mid_generation_joins_without_waiting_and_is_unchanged(tiny_model_dir):
    teacher = load_teacher(str(tiny_model_dir), batch_size=8, settings=TransformersSettings(lanes=1))
    short = SamplingParams(temperature=1.0, max_new_tokens=3, seed=7)
    alone = teacher.generate([CONVS[1]], short)
    long = teacher.start([CONVS[0]], SamplingParams(temperature=1.0, max_new_tokens=400, seed=1, stop=()))
    wait_until(lambda: teacher.decoder.steps >= 5, 120, "the long row to decode 5 steps")
    started = teacher.decoder.steps
    joined = teacher.start([CONVS[1]], short).result()
    assert joined == alone
    assert teacher.decoder.steps - started < 100  # answered long before the long row could end
    long.cancel()
    teacher.close()


def test_a_busy_lane_leaves_a_new_row_to_a_lane_with_fewer():
    """Admission is balanced: the row goes to the lane below its fair share, whichever lane asks first (the lanes
    poll between steps, so without the share the busiest one would often take it and leave a core idle)."""
    from synthforge.teachers.decoding import admitted_rows

    assert admitted_rows([6, 1], 0, 1, 16, block=False) == 0  # lane 0 holds more than its share of 8
    assert admitted_rows([6, 1], 1, 1, 16, block=False) == 1
    # 8 running + 6 waiting: 7 each; a lane held below its batch by its share takes it at once
    assert admitted_rows([6, 2], 0, 6, 16, block=False) == 1
    assert admitted_rows([7, 2], 1, 5, 16, block=False) == 5
    # 28 running + 3 waiting: 2 free in each lane of 16; nearly full: one prefill for all once they fit
    assert admitted_rows([14, 14], 0, 3, 16, block=False) == 0
    assert admitted_rows([12, 14], 0, 3, 16, block=False) == 3  # two rows ended: room for every waiting one
    assert admitted_rows([0, 8], 0, 1, 16, block=True) == 1  # a lane that has nothing always takes work


def test_two_lanes_share_the_rows_of_one_batch(tiny_model_dir):
    """Seen from outside: rows sent together are decoded by both lanes, the same as one lane decodes them."""
    teacher = load_teacher(str(tiny_model_dir), batch_size=16, settings=TransformersSettings(lanes=2))
    params = SamplingParams(temperature=1.0, max_new_tokens=4, seed=3)
    both = teacher.generate(CONVS * 4, params)
    assert all(n > 0 for n in teacher.decoder.admitted)
    one = load_teacher(str(tiny_model_dir), batch_size=16, settings=TransformersSettings(lanes=1))
    assert one.generate(CONVS * 4, params) == both
    teacher.close()
    one.close()
