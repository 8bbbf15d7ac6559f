"""Truncated-BPTT batches over recorded episodes: `[rollout_len, nrollouts]` chunks of streams.

Each of the `nrollouts` streams plays whole episodes back to back, so one chunk may hold the
end of one episode and the start of the next; `masks` is 0 at each episode's first step. A
stream's next chunk continues where its last one stopped, so the learner carries each stream's
recurrent memory from chunk to chunk. When the epoch's shuffled episode order runs out, the
partial batch is dropped and a new epoch starts: a fresh shuffle, every stream on a new episode
(`new_epoch` tells the learner to reset stream memory).

Batches are assembled ahead by a background thread from numpy arrays held in memory. Every
batch carries the iterator's position after it, so `state_dict()` (saved in checkpoints) is
exactly where the consumer stands and a resumed run gets the same batches.
"""

import queue
import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from stagerl.errors import ConfigError, require_positive
from stagerl.offpolicy.dataset import EpisodeArrays


@dataclass
class OffPolicyArrays:
    """One batch as numpy arrays, `[rollout_len, nrollouts, ...]`."""

    observations: dict[str, np.ndarray]
    actions: np.ndarray  # the dataset's (expert's) action at each step
    prev_actions: np.ndarray  # the action before each step in its episode (0 at its start)
    masks: np.ndarray  # float32, 0 at each episode's first step
    epoch: int
    new_epoch: bool  # the first batch of an epoch: stream memory starts from zero
    episodes_begun: int  # episodes begun so far in this epoch, this batch's included


@dataclass(frozen=True)
class Position:
    """Where the iterator stands: enough to produce every later batch."""

    epoch: int
    rng: dict[str, Any]  # the shuffling generator's state, after this epoch's shuffle
    order: np.ndarray  # this epoch's episode order
    next_in_order: int
    stream_episode: np.ndarray  # [nrollouts] episode each stream is in (-1: none yet)
    stream_offset: np.ndarray  # [nrollouts] steps of it already served
    episodes_begun: int


class TruncatedBPTTIterator:
    """An endless iterator of `OffPolicyArrays` over `episodes` (see the module docstring)."""

    def __init__(
        self,
        episodes: EpisodeArrays,
        *,
        nrollouts: int,
        rollout_len: int,
        seed: int,
        prefetch: int = 4,
    ) -> None:
        for name, value in (("nrollouts", nrollouts), ("rollout_len", rollout_len)):
            require_positive(name, value, whole=True)
        nrollouts, rollout_len = int(nrollouts), int(rollout_len)
        if episodes.num_episodes < nrollouts:
            raise ConfigError(
                f"nrollouts={nrollouts} is invalid: {episodes.source} gives only "
                f"{episodes.num_episodes} episodes here, fewer than the streams to fill"
            )
        self.episodes = episodes
        self.nrollouts, self.rollout_len = nrollouts, rollout_len
        self.prefetch = prefetch
        # An epoch's first batch runs out of episodes only if all of them fit in the streams'
        # first rollout_len - 1 steps plus the episodes some streams stopped in, one each (the
        # stream still filling has none): with more steps, it fills in any shuffled order.
        longest = np.sort(episodes.lengths)[::-1][: nrollouts - 1]
        needed = nrollouts * (rollout_len - 1) + int(longest.sum()) + 1
        if len(episodes.actions) < needed:
            raise ConfigError(
                f"{episodes.source}: {episodes.num_episodes} episodes "
                f"({len(episodes.actions)} steps) cannot fill one batch of nrollouts={nrollouts} "
                f"streams x rollout_len={rollout_len} steps in every order of its episodes "
                f"(that takes {needed} steps with its longest episodes); record more episodes "
                "or use smaller batches"
            )
        self.position = self._new_epoch(-1, np.random.default_rng(seed).bit_generator.state)
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _new_epoch(self, previous: int, rng_state: dict[str, Any]) -> Position:
        rng = np.random.default_rng()
        rng.bit_generator.state = rng_state
        order = rng.permutation(self.episodes.num_episodes)
        return Position(
            epoch=previous + 1,
            rng=rng.bit_generator.state,
            order=order,
            next_in_order=0,
            stream_episode=np.full(self.nrollouts, -1, dtype=np.int64),
            stream_offset=np.zeros(self.nrollouts, dtype=np.int64),
            episodes_begun=0,
        )

    def _stream_rows(
        self,
        position: Position,
        next_in_order: int,
        stream: int,
        rows: np.ndarray,
        firsts: np.ndarray,
    ) -> tuple[int, int, int, int] | None:
        """Fill one stream's row of step indices (and episode-start flags); return its episode,
        offset, the next place in the order and the episodes it began, or None when the
        epoch's episodes run out."""
        lengths, starts = self.episodes.lengths, self.episodes.starts
        episode, offset = position.stream_episode[stream], position.stream_offset[stream]
        begun = filled = 0
        while filled < self.rollout_len:
            if episode < 0 or offset >= lengths[episode]:
                if next_in_order >= len(position.order):
                    return None
                episode, offset = position.order[next_in_order], 0
                next_in_order, begun = next_in_order + 1, begun + 1
                firsts[filled] = True
            take = min(self.rollout_len - filled, lengths[episode] - offset)
            rows[filled : filled + take] = starts[episode] + offset + np.arange(take)
            filled, offset = filled + take, offset + take
        return episode, offset, next_in_order, begun

    def _fill(self, position: Position) -> tuple[np.ndarray, np.ndarray, Position] | None:
        """Step rows and episode-start flags `[nrollouts, rollout_len]` of the batch at
        `position`, and the position after it; None if the epoch runs out first."""
        rows = np.zeros((self.nrollouts, self.rollout_len), dtype=np.int64)
        firsts = np.zeros((self.nrollouts, self.rollout_len), dtype=bool)
        episode, offset = position.stream_episode.copy(), position.stream_offset.copy()
        next_in_order, begun = position.next_in_order, position.episodes_begun
        for stream in range(self.nrollouts):
            advanced = self._stream_rows(
                position, next_in_order, stream, rows[stream], firsts[stream]
            )
            if advanced is None:
                return None
            episode[stream], offset[stream], next_in_order, more = advanced
            begun += more
        after = replace(
            position,
            next_in_order=next_in_order,
            stream_episode=episode,
            stream_offset=offset,
            episodes_begun=begun,
        )
        return rows, firsts, after

    def _produce(self, position: Position) -> tuple[OffPolicyArrays, Position]:
        """The batch at `position` and the position after it. When the epoch runs out, the
        partial batch is dropped and the next epoch's first batch comes instead (the
        constructor checked that a fresh epoch fills one, whatever its order)."""
        filled = self._fill(position)
        if filled is None:
            position = self._new_epoch(position.epoch, position.rng)
            filled = self._fill(position)
        rows, firsts, after = filled
        rows, firsts = rows.T, firsts.T  # [rollout_len, nrollouts]
        actions = self.episodes.actions
        arrays = OffPolicyArrays(
            observations={key: obs[rows] for key, obs in self.episodes.observations.items()},
            actions=actions[rows],
            prev_actions=np.where(firsts, 0, actions[np.maximum(rows - 1, 0)]),
            masks=(~firsts).astype(np.float32),
            epoch=position.epoch,
            new_epoch=position.next_in_order == 0,
            episodes_begun=after.episodes_begun,
        )
        return arrays, after

    def _put(self, item: Any) -> bool:
        """Queue `item` unless asked to stop first."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, position: Position) -> None:
        try:
            while True:
                item = self._produce(position)
                position = item[1]
                if not self._put(item):
                    return
        except BaseException as error:  # handed to the consumer, who raises it
            self._put(error)

    def _start(self) -> None:
        self._stop.clear()
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._thread = threading.Thread(
            target=self._run, args=(self.position,), name="offpolicy-prefetch", daemon=True
        )
        self._thread.start()

    def __iter__(self) -> "TruncatedBPTTIterator":
        return self

    def __next__(self) -> OffPolicyArrays:
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._thread = None  # it ended: a later call starts again after the last batch
            raise item
        batch, self.position = item
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The position after the last batch handed out."""
        position = self.position
        return {
            "epoch": position.epoch,
            "rng": position.rng,
            "order": position.order.copy(),
            "next_in_order": position.next_in_order,
            "stream_episode": position.stream_episode.copy(),
            "stream_offset": position.stream_offset.copy(),
            "episodes_begun": position.episodes_begun,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()`; batches produced ahead are discarded."""
        self.close()
        if len(state["order"]) != self.episodes.num_episodes:
            raise ConfigError(
                f"{self.episodes.source}: the checkpoint's iterator covers "
                f"{len(state['order'])} episodes, the dataset here has "
                f"{self.episodes.num_episodes}; resume with the dataset the run started with"
            )
        if len(state["stream_episode"]) != self.nrollouts:
            raise ConfigError(
                f"{self.episodes.source}: the checkpoint's iterator has "
                f"{len(state['stream_episode'])} streams, nrollouts={self.nrollouts} here; "
                "resume with the nrollouts the run started with"
            )
        self.position = Position(**state)

    def close(self) -> None:
        """Stop the prefetching thread and drop the batches it made (the next batch starts it
        again, from the consumer's place)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._queue = queue.Queue(maxsize=self.prefetch)
