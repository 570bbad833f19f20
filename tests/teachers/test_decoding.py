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


def test_a_busy_lane_leaves_a_new_row_to_a_lane_with_fewer(tiny_model_dir):
    """Admission is balanced: the row goes to the lane below its fair share, whichever lane asks first (the lanes
    poll between steps, so without the share the busiest one would often take it and leave a core idle)."""
    from concurrent.futures import Future

    from synthforge.teachers.decoding import Row

    teacher = load_teacher(str(tiny_model_dir), batch_size=16, settings=TransformersSettings(lanes=2))
    decoder = teacher.decoder

    def row() -> Row:
        return Row(ids=[1, 2], temperature=1.0, top_p=1.0, max_new_tokens=4, seed=1, done=Future())

    decoder._active = [6, 1]
    decoder._waiting.extend([row()])
    assert decoder._take(0, 6, block=False) == []  # lane 0 holds more than its share of 8
    assert len(decoder._take(1, 1, block=False)) == 1
    decoder._waiting.extend([row() for _ in range(6)])  # 8 running + 6 waiting: 7 each
    assert len(decoder._take(0, 6, block=False)) == 1  # held below its batch by its share: it takes it at once
    assert len(decoder._take(1, 2, block=False)) == 5
    decoder._active = [14, 14]
    decoder._waiting.extend([row() for _ in range(3)])  # 28 running + 3 waiting: 2 free in each lane of 16
    assert decoder._take(0, 14, block=False) == []  # nearly full: one prefill for all of them once they fit
    assert len(decoder._take(0, 12, block=False)) == 3  # two rows ended: room for every waiting one
    decoder._active = [8, 8]
    decoder._waiting.extend([row()])
    assert len(decoder._take(0, 0, block=True)) == 1  # a lane that has nothing always takes work
    teacher.close()
