"""The DAgger dataset: a bounded FIFO of (observation sequence, expert action) task sequences.

Each sequence is one task's rollout (`num_steps` steps) with its masks and the recurrent memory
it started from, so a recurrent model replays it like a fresh minibatch. The expert's action is
part of the observations (ExpertActionSensor), which is all the Imitation loss reads.
"""

import torch
from gymnasium import spaces

from stagerl.engine.storage import RolloutStorage, torch_dtype
from stagerl.errors import CheckpointError
from stagerl.losses.base import RolloutBatch


class ExpertDataBuffer:
    """A bounded FIFO of whole task sequences with their expert actions (see the module)."""

    def __init__(
        self,
        *,
        capacity: int,
        num_steps: int,
        observation_space: spaces.Dict,
        memory_shape: tuple[int, int],
        device: torch.device | str = "cpu",
    ) -> None:
        self.capacity, self.num_steps = capacity, num_steps
        self.device = torch.device(device)
        self.observations = {
            uuid: torch.zeros(
                (capacity, num_steps, *box.shape), dtype=torch_dtype(box.dtype), device=device
            )
            for uuid, box in observation_space.spaces.items()
        }
        self.masks = torch.zeros(capacity, num_steps, device=device)
        self.prev_actions = torch.zeros(capacity, num_steps, dtype=torch.long, device=device)
        self.memory = torch.zeros(capacity, *memory_shape, device=device)
        self.size = 0
        self.next = 0

    @property
    def nbytes(self) -> int:
        """Memory the buffer holds, in bytes."""
        tensors = [*self.observations.values(), self.masks, self.prev_actions, self.memory]
        return sum(t.numel() * t.element_size() for t in tensors)

    def add(self, storage: RolloutStorage) -> None:
        """Append every task sequence of the rollout, overwriting the oldest when full."""
        steps = self.num_steps
        rows = (torch.arange(storage.num_tasks, device=self.device) + self.next) % self.capacity
        for uuid, target in self.observations.items():
            target[rows] = storage.observations[uuid][:steps].transpose(0, 1)
        self.masks[rows] = storage.masks[:steps].transpose(0, 1)
        self.prev_actions[rows] = storage.prev_actions[:steps].transpose(0, 1)
        self.memory[rows] = storage.memory.transpose(0, 1)
        self.next = int(rows[-1] + 1) % self.capacity
        self.size = min(self.size + storage.num_tasks, self.capacity)

    def sample(self, count: int, generator: torch.Generator) -> RolloutBatch:
        """`count` stored sequences drawn uniformly with replacement, as a minibatch."""
        rows = torch.randint(0, self.size, (count,), generator=generator).to(self.device)
        zeros = torch.zeros(self.num_steps, count, device=self.device)
        return RolloutBatch(
            observations={u: obs[rows].transpose(0, 1) for u, obs in self.observations.items()},
            memory=self.memory[rows].transpose(0, 1),
            prev_actions=self.prev_actions[rows].transpose(0, 1),
            masks=self.masks[rows].transpose(0, 1),
            actions=zeros.long(),
            old_log_probs=zeros,
            old_values=zeros,
            returns=zeros,
            advantages=zeros,
        )

    def state_dict(self) -> dict:
        """The stored sequences and the write position, for checkpoints."""
        return {
            "observations": self.observations,
            "masks": self.masks,
            "prev_actions": self.prev_actions,
            "memory": self.memory,
            "size": self.size,
            "next": self.next,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from what `state_dict()` saved. Saved with another capacity (`max_sequences`
        edited, resumed with --allow-config-change), the newest sequences that fit are kept."""
        saved = {"masks": state["masks"], "prev_actions": state["prev_actions"]}
        saved |= {"memory": state["memory"], **state["observations"]}
        mine = {"masks": self.masks, "prev_actions": self.prev_actions, "memory": self.memory}
        mine |= self.observations
        shapes = {key: tuple(tensor.shape[1:]) for key, tensor in saved.items()}
        wanted = {key: tuple(tensor.shape[1:]) for key, tensor in mine.items()}
        if shapes != wanted:
            raise CheckpointError(
                f"the checkpoint's DAgger buffer holds sequences shaped {shapes}, this run's "
                f"are {wanted} (num_steps, the sensors or the model's memory changed since)"
            )
        size, next_row, capacity = state["size"], state["next"], len(state["masks"])
        rows = torch.arange(capacity)  # as saved: the same rows are sampled from then on
        if capacity != self.capacity:  # oldest to newest, the newest that fit
            rows = ((torch.arange(size) + next_row - size) % capacity)[-self.capacity :]
            size, next_row = len(rows), len(rows) % self.capacity
        for key, tensor in mine.items():
            tensor[: len(rows)] = saved[key][rows].to(self.device)
        self.size, self.next = size, next_row
