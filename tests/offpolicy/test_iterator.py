"""Truncated-BPTT chunking over hand-made episodes: rows, masks, epochs and exact resume."""

from pathlib import Path

import numpy as np
import pytest

from stagerl.errors import ConfigError
from stagerl.offpolicy.dataset import EpisodeArrays
from stagerl.offpolicy.iterator import TruncatedBPTTIterator

LENGTHS = [3, 5, 2, 4, 1, 1]  # starts 0, 3, 8, 10, 14, 15; 16 steps in all


def _episodes() -> EpisodeArrays:
    lengths = np.array(LENGTHS)
    steps = int(lengths.sum())
    return EpisodeArrays(
        observations={"row": np.arange(steps)},  # each step observes its own row number
        actions=100 + np.arange(steps),
        starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
        lengths=lengths,
        source=Path("hand-made"),
    )


def _in_order(iterator: TruncatedBPTTIterator) -> TruncatedBPTTIterator:
    """Episodes served 0, 1, 2, ... in the first epoch, so the expected rows are by hand."""
    state = iterator.state_dict()
    iterator.load_state_dict({**state, "order": np.arange(len(LENGTHS))})
    return iterator


def test_streams_play_episodes_back_to_back_with_masks_at_episode_starts():
    iterator = _in_order(TruncatedBPTTIterator(_episodes(), nrollouts=2, rollout_len=4, seed=0))
    first, second = next(iterator), next(iterator)
    # stream 0: episode 0 (rows 0-2), then episode 1 (rows 3-7) ends on a chunk boundary;
    # stream 1: episodes 2 (8-9) and 3 (10-13), then 4 (14) and 5 (15) inside one chunk.
    np.testing.assert_array_equal(first.observations["row"].T, [[0, 1, 2, 3], [8, 9, 10, 11]])
    np.testing.assert_array_equal(first.masks.T, [[0, 1, 1, 0], [0, 1, 0, 1]])
    np.testing.assert_array_equal(second.observations["row"].T, [[4, 5, 6, 7], [12, 13, 14, 15]])
    np.testing.assert_array_equal(second.masks.T, [[1, 1, 1, 1], [1, 1, 0, 0]])
    np.testing.assert_array_equal(second.actions.T, [[104, 105, 106, 107], [112, 113, 114, 115]])
    np.testing.assert_array_equal(second.prev_actions.T, [[103, 104, 105, 106], [111, 112, 0, 0]])
    assert (first.new_epoch, second.new_epoch) == (True, False)
    assert (first.episodes_begun, second.episodes_begun) == (4, 6)
    iterator.close()


def test_an_exhausted_epoch_drops_the_partial_batch_and_reshuffles():
    iterator = _in_order(TruncatedBPTTIterator(_episodes(), nrollouts=2, rollout_len=4, seed=0))
    next(iterator), next(iterator)
    third = next(iterator)  # stream 0 needs a 7th episode: epoch 1 begins
    assert (third.epoch, third.new_epoch) == (1, True)
    assert (third.masks[0] == 0).all()  # every stream starts a fresh episode
    assert sorted(iterator.state_dict()["order"]) == list(range(len(LENGTHS)))
    iterator.close()


def test_resuming_mid_epoch_gives_the_same_batches_as_running_on():
    straight = TruncatedBPTTIterator(_episodes(), nrollouts=2, rollout_len=3, seed=5)
    [next(straight) for _ in range(3)]
    state = straight.state_dict()
    expected = [next(straight) for _ in range(6)]  # crosses into later epochs
    resumed = TruncatedBPTTIterator(_episodes(), nrollouts=2, rollout_len=3, seed=99)
    resumed.load_state_dict(state)
    for want, got in zip(expected, [next(resumed) for _ in range(6)], strict=True):
        np.testing.assert_array_equal(got.observations["row"], want.observations["row"])
        np.testing.assert_array_equal(got.masks, want.masks)
        assert (got.epoch, got.episodes_begun) == (want.epoch, want.episodes_begun)
    straight.close(), resumed.close()


def test_resuming_with_other_streams_is_an_error():
    state = TruncatedBPTTIterator(_episodes(), nrollouts=2, rollout_len=3, seed=0).state_dict()
    other = TruncatedBPTTIterator(_episodes(), nrollouts=3, rollout_len=3, seed=0)
    with pytest.raises(ConfigError, match="2 streams, nrollouts=3 here"):
        other.load_state_dict(state)


def test_more_streams_than_episodes_is_an_error():
    with pytest.raises(ConfigError, match="nrollouts=7.*only 6 episodes"):
        TruncatedBPTTIterator(_episodes(), nrollouts=7, rollout_len=4, seed=0)


def test_episodes_too_few_to_fill_one_batch_in_every_order_are_an_error():
    # 16 steps, but the third stream would need a seventh episode to fill its 6 steps
    with pytest.raises(ConfigError, match="6 episodes .16 steps. cannot fill one batch"):
        TruncatedBPTTIterator(_episodes(), nrollouts=3, rollout_len=6, seed=0)
    # Episodes of 3, 1, 1, 1 steps fill two streams of 3 only when the 3 comes first or last
    # (elsewhere the first stream stops inside it): a later epoch's shuffle could fail.
    lengths = np.array([3, 1, 1, 1])
    uneven = EpisodeArrays({}, np.zeros(6, np.int64), np.array([0, 3, 4, 5]), lengths, Path("u"))
    with pytest.raises(ConfigError, match="in every order of its episodes"):
        TruncatedBPTTIterator(uneven, nrollouts=2, rollout_len=3, seed=0)


@pytest.mark.timeout(30)
def test_an_error_preparing_a_batch_is_raised_and_the_next_call_starts_again(monkeypatch):
    iterator = _in_order(TruncatedBPTTIterator(_episodes(), nrollouts=2, rollout_len=4, seed=0))
    produce, failures = TruncatedBPTTIterator._produce, [MemoryError("no room")]

    def fails_once(self, position):
        if failures:
            raise failures.pop()
        return produce(self, position)

    monkeypatch.setattr(TruncatedBPTTIterator, "_produce", fails_once)
    with pytest.raises(MemoryError, match="no room"):
        next(iterator)
    first = next(iterator)  # the prefetch thread ended with the error: a new one serves this
    np.testing.assert_array_equal(first.observations["row"].T, [[0, 1, 2, 3], [8, 9, 10, 11]])
    iterator.close()
