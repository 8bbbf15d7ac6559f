"""RolloutStorage: one rollout of `num_steps` steps on `num_tasks` tasks, as torch tensors.

Layout: observations, masks and previous actions have `T + 1` rows (row T is the first row of
the next rollout); everything about actions has T rows. `masks[t] == 0` where step t starts an
episode; `prev_actions[t]` is the action executed before step t even then (the model decides
what a previous action from another episode means, usually nothing, through the mask).
Recurrent memory is kept only at row 0: a recurrent model's minibatches hold whole task
sequences, which it replays from there. A feed-forward model's minibatches hold single steps
drawn from the whole rollout, as SB3's and CleanRL's do.
"""

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from stagerl.engine.returns import compute_returns
from stagerl.losses.base import RolloutBatch, standardize

ALL = slice(None)  # every task


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype of a numpy dtype."""
    return torch.from_numpy(np.zeros(0, dtype)).dtype


class RolloutStorage:
    """One rollout of every task, on the training device (layout in the module docstring)."""

    def __init__(
        self,
        *,
        num_steps: int,
        num_tasks: int,
        observation_space: spaces.Dict,
        memory_shape: tuple[int, int],
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_steps, self.num_tasks = num_steps, num_tasks
        self.device = torch.device(device)
        steps, tasks = num_steps, num_tasks
        zeros = lambda *shape, dtype=torch.float32: torch.zeros(  # noqa: E731
            shape, dtype=dtype, device=self.device
        )
        self.observations = {
            uuid: zeros(steps + 1, tasks, *box.shape, dtype=torch_dtype(box.dtype))
            for uuid, box in observation_space.spaces.items()
        }
        layers, hidden = memory_shape
        self.recurrent = layers * hidden > 0
        self.memory = zeros(layers, tasks, hidden)  # at row 0
        self.final_memory = self.memory  # after the last step, set by collect_rollout
        self.masks = zeros(steps + 1, tasks)  # the very first observations start episodes
        self.prev_actions = zeros(steps + 1, tasks, dtype=torch.long)
        self.actions = zeros(steps, tasks, dtype=torch.long)
        self.log_probs = zeros(steps, tasks)
        self.values = zeros(steps, tasks)
        self.rewards = zeros(steps, tasks)
        self.terminated = zeros(steps, tasks, dtype=torch.bool)
        self.truncated = zeros(steps, tasks, dtype=torch.bool)
        self.bootstrap_values = zeros(steps, tasks)
        self.returns = zeros(steps, tasks)
        self.advantages = zeros(steps, tasks)
        self.normalized_advantages = zeros(steps, tasks)
        # What `insert` fills, by name; on a CPU as numpy views, which cost a fourth of torch's
        # indexing (8.5 against 33 us a step of 8 tasks, every step of every task group).
        names = ("actions", "log_probs", "values", "rewards", "terminated", "truncated")
        names += ("bootstrap_values", "masks", "prev_actions")
        self._filled = {name: getattr(self, name) for name in names}
        self._filled |= {f"obs/{uuid}": obs for uuid, obs in self.observations.items()}
        if self.device.type == "cpu":
            self._filled = {name: tensor.numpy() for name, tensor in self._filled.items()}

    def set_observations(
        self, row: int, observations: dict[str, np.ndarray], *, tasks: slice = ALL
    ) -> None:
        """Write one step's observations into row `row` for the tasks `tasks`."""
        for uuid, target in self.observations.items():
            target[row, tasks].copy_(torch.from_numpy(observations[uuid]))

    def observations_at(self, row: int, tasks: slice = ALL) -> dict[str, torch.Tensor]:
        """`[1, tasks]` views of row `row`."""
        return {uuid: obs[row : row + 1, tasks] for uuid, obs in self.observations.items()}

    def insert(
        self,
        t: int,
        *,
        actions: torch.Tensor,
        log_probs: torch.Tensor,
        values: torch.Tensor,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        next_observations: dict[str, np.ndarray],
        tasks: slice = ALL,
    ) -> None:
        """Record step t of `tasks` and the observation that follows it. Its bootstrap values
        start at zero; the rollout sets those of tasks cut off by a step limit."""
        step = {"actions": actions, "log_probs": log_probs, "values": values}
        step |= {"rewards": rewards, "terminated": terminated, "truncated": truncated}
        for name, value in (step | {"bootstrap_values": 0.0}).items():
            self._put(name, t, tasks, value)
        following = {f"obs/{uuid}": obs for uuid, obs in next_observations.items()}
        following |= {"masks": ~(terminated | truncated), "prev_actions": actions}
        for name, value in following.items():
            self._put(name, t + 1, tasks, value)

    def _put(self, name: str, row: int, tasks: slice, value: Any) -> None:
        target = self._filled[name]
        if isinstance(target, np.ndarray):
            target[row, tasks] = value.numpy() if isinstance(value, torch.Tensor) else value
        elif isinstance(value, float):
            target[row, tasks] = value  # filled on the device, nothing copied to it
        else:
            target[row, tasks] = torch.as_tensor(value, device=self.device)

    def compute_returns(
        self,
        last_values: torch.Tensor,
        *,
        gamma: float,
        gae_lambda: float,
        use_gae: bool,
        bootstrap_time_limit: bool = True,
        normalize: Callable[[torch.Tensor], torch.Tensor] = standardize,
    ) -> None:
        """Fill returns and advantages (and the rollout-normalised advantages, by `normalize`:
        over all trainer ranks' rollouts in a distributed run); without
        `bootstrap_time_limit`, a truncated episode ends like a terminated one."""
        terminated, truncated = self.terminated, self.truncated
        if not bootstrap_time_limit:
            terminated, truncated = terminated | truncated, torch.zeros_like(truncated)
        self.returns, self.advantages = compute_returns(
            rewards=self.rewards,
            values=self.values,
            terminated=terminated,
            truncated=truncated,
            bootstrap_values=self.bootstrap_values,
            last_values=last_values,
            gamma=gamma,
            gae_lambda=gae_lambda,
            use_gae=use_gae,
        )
        self.normalized_advantages = normalize(self.advantages)

    def minibatches(
        self, num_mini_batch: int, generator: torch.Generator
    ) -> Iterator[RolloutBatch]:
        """`num_mini_batch` shuffled minibatches, whose sizes differ by at most one: of whole
        task sequences (steps in order) for a recurrent model, of single steps otherwise."""
        samples = self.num_tasks if self.recurrent else self.num_steps * self.num_tasks
        order = torch.randperm(samples, generator=generator)
        for part in order.tensor_split(num_mini_batch):
            yield self.batch(part) if self.recurrent else self.steps_batch(part)

    def batch(self, tasks: torch.Tensor) -> RolloutBatch:
        """The whole rollout of the tasks `tasks` (indices), as one minibatch."""
        tasks = tasks.to(self.device)
        # index_select: 18.4 against 47.6 us a minibatch of `tensor[:, tasks]`
        pick = lambda tensor: tensor.index_select(1, tasks)  # noqa: E731
        return self._batch_of(pick, memory=pick(self.memory))

    def steps_batch(self, steps: torch.Tensor) -> RolloutBatch:
        """Single steps, by their indices in the rollout flattened step-major (`t * num_tasks +
        task`), as one `[1, n]` minibatch; for a feed-forward model, which needs no memory."""
        steps = steps.to(self.device)
        layers, _, hidden = self.memory.shape
        return self._batch_of(
            lambda tensor: tensor.flatten(0, 1).index_select(0, steps)[None],
            memory=self.memory.new_zeros(layers, len(steps), hidden),
        )

    def _batch_of(
        self, pick: Callable[[torch.Tensor], torch.Tensor], *, memory: torch.Tensor
    ) -> RolloutBatch:
        """A minibatch of what `pick` takes from every field's `num_steps` rows."""
        rows = self.num_steps
        return RolloutBatch(
            observations={uuid: pick(obs[:rows]) for uuid, obs in self.observations.items()},
            memory=memory,
            prev_actions=pick(self.prev_actions[:rows]),
            masks=pick(self.masks[:rows]),
            actions=pick(self.actions),
            old_log_probs=pick(self.log_probs),
            old_values=pick(self.values),
            returns=pick(self.returns),
            advantages=pick(self.advantages),
            normalized_advantages=pick(self.normalized_advantages),
        )

    def start_next_rollout(self) -> None:
        """The last row becomes the first row of the next rollout."""
        for obs in self.observations.values():
            obs[0].copy_(obs[-1])
        self.masks[0] = self.masks[-1]
        self.prev_actions[0] = self.prev_actions[-1]
        self.memory = self.final_memory

    def carry_state(self) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
        """What continues into the next rollout; saved in checkpoints for exact resume."""
        return {
            "observations": {uuid: obs[0].clone() for uuid, obs in self.observations.items()},
            "masks": self.masks[0].clone(),
            "prev_actions": self.prev_actions[0].clone(),
            "memory": self.memory.clone(),
        }

    def load_carry_state(self, state: dict) -> None:
        """Continue from what `carry_state()` saved."""
        for uuid, obs in self.observations.items():
            obs[0].copy_(state["observations"][uuid])
        self.masks[0] = state["masks"]
        self.prev_actions[0] = state["prev_actions"]
        self.memory = state["memory"].to(self.device, copy=True)


def join_carry_states(states: list[dict]) -> dict:
    """The carry states of several ranks as one, tasks in rank order."""
    return {
        "observations": {
            uuid: torch.cat([s["observations"][uuid] for s in states])
            for uuid in states[0]["observations"]
        },
        "masks": torch.cat([s["masks"] for s in states]),
        "prev_actions": torch.cat([s["prev_actions"] for s in states]),
        "memory": torch.cat([s["memory"] for s in states], dim=1),  # [layers, tasks, hidden]
    }


def slice_carry_state(state: dict, *, first: int, count: int) -> dict:
    """The carry state of tasks `first` .. `first + count - 1`."""
    tasks = slice(first, first + count)
    return {
        "observations": {uuid: obs[tasks] for uuid, obs in state["observations"].items()},
        "masks": state["masks"][tasks],
        "prev_actions": state["prev_actions"][tasks],
        "memory": state["memory"][:, tasks],
    }


# AllenAct 0.5's name for the type of its storages, which its configs import to annotate
# `named_storages` (taken only as None): stagerl's one storage.
ExperienceStorage = RolloutStorage
