"""The BabyAI baseline agent (Chevalier-Boisvert et al. 2019, "cnn1"), as AllenAct's BabyAI
experiments use it: written from the paper's description, with AllenAct's argument names."""

from typing import Any

import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Categorical
from torch.nn import functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

from stagerl.errors import ConfigError
from stagerl.models.base import ActorCriticModel, ActorCriticOutput, run_recurrent

_optimizer_steps = [0]  # steps taken by any torch optimizer in this process


def _count_optimizer_step(optimizer: Any, args: Any, kwargs: Any) -> None:
    _optimizer_steps[0] += 1


# A fused (or foreach-less) optimizer step can leave the parameters' version counters as they
# were, so cached mission encodings also expire with any optimizer step.
register_optimizer_step_post_hook(_count_optimizer_step)


def _unit_rows_(linear: nn.Linear) -> None:
    """Gaussian weights with every output unit's weight vector scaled to norm 1, zero bias: the
    initialisation the BabyAI baselines inherited from pytorch-a2c-ppo-acktr."""
    with torch.no_grad():
        linear.weight.normal_(0, 1)
        linear.weight /= linear.weight.norm(dim=1, keepdim=True)
        linear.bias.zero_()


def _place_values(vocabulary: int, length: int) -> torch.Tensor | None:
    """Token ids as the digits of one int64 per mission, where that number cannot overflow."""
    if vocabulary**length >= 2**63:
        return None
    return torch.tensor([vocabulary**i for i in range(length)])


class _SmallConv2d(nn.Conv2d):
    """A plain convolution (stride 1, no padding) over the view's small maps, computed as the
    matrix product it is where oneDNN's call costs more: on an input exactly one kernel in size
    (the 7x7 view's 2x2 maps: 5x as fast for 8 images, 2.4x for a 256-image update, forward and
    backward), and without a gradient (acting) over the unfolded input (1.6-2x as fast for 8
    images; with a gradient, for hundreds of images, oneDNN's is the faster)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of `x` `[B, C, H, W]`."""
        weight = self.weight.flatten(1)
        if x.shape[-2:] == self.kernel_size:
            return F.linear(x.flatten(1), weight, self.bias)[:, :, None, None]
        if torch.is_grad_enabled():
            return super().forward(x)
        (kernel_height, kernel_width), (height, width) = self.kernel_size, x.shape[-2:]
        height, width = height - kernel_height + 1, width - kernel_width + 1
        columns = F.unfold(x, self.kernel_size).transpose(1, 2)  # [B, cells, C x kernel]
        cells = F.linear(columns, weight, self.bias).transpose(1, 2)
        return cells.reshape(len(x), -1, height, width)


def _head(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, 64), nn.Tanh(), nn.Linear(64, outputs))


class BabyAIRecurrentACModel(ActorCriticModel):
    """Three 2x2 convolutions (with a 2x2 max-pool) over the raw (object, colour, state)
    integers of the 7x7 view, an optional LSTM memory, an optional GRU over the mission's
    words joined to the memory's output, and 64-unit tanh actor and critic heads.

    Observations: `minigrid_ego_image` ([7, 7, C] integers) and, with `use_instr`,
    `minigrid_mission` (token ids, 0 = padding). Memory is the LSTM's `(h, c)` joined.
    AllenAct's arguments and defaults (no memory, no mission unless asked); of its
    architectures, `arch='cnn1'` with `lang_model='gru'`.
    """

    def __init__(
        self,
        action_space: spaces.Discrete,
        observation_space: spaces.Dict,
        *,
        image_dim: int = 128,
        memory_dim: int = 128,
        instr_dim: int = 128,
        use_instr: bool = False,
        lang_model: str = "gru",
        use_memory: bool = False,
        arch: str = "cnn1",
        aux_info: Any = None,
        include_auxiliary_head: bool = False,
    ) -> None:
        super().__init__(action_space, observation_space)
        if arch != "cnn1" or lang_model != "gru" or aux_info or include_auxiliary_head:
            raise ConfigError(
                "BabyAIRecurrentACModel supports arch='cnn1' and lang_model='gru' without "
                f"auxiliary heads, got arch={arch!r}, lang_model={lang_model!r}, "
                f"aux_info={aux_info!r}, include_auxiliary_head={include_auxiliary_head!r}"
            )
        if "minigrid_ego_image" not in observation_space.spaces:
            raise ConfigError("BabyAIRecurrentACModel: no sensor with uuid 'minigrid_ego_image'")
        if use_instr and "minigrid_mission" not in observation_space.spaces:
            raise ConfigError(
                "BabyAIRecurrentACModel(use_instr=True) needs a mission sensor with uuid "
                "'minigrid_mission' in SENSORS"
            )
        self.memory_dim = memory_dim
        channels = observation_space["minigrid_ego_image"].shape[-1]
        self.image_conv = nn.Sequential(
            _SmallConv2d(channels, 16, 2),
            nn.ReLU(),
            nn.MaxPool2d(2, stride=2),
            _SmallConv2d(16, 32, 2),
            nn.ReLU(),
            _SmallConv2d(32, image_dim, 2),
            nn.ReLU(),
            nn.Flatten(),
        )
        view = observation_space["minigrid_ego_image"].shape[0]
        image_features = image_dim * ((view - 1) // 2 - 2) ** 2  # 7x7 -> 6 -> 3 -> 2 -> 1
        self.memory_rnn = nn.LSTM(image_features, memory_dim) if use_memory else None
        embedding = memory_dim if use_memory else image_features
        self.word_embedding = self.instr_rnn = places = None
        if use_instr:
            vocabulary = int(observation_space["minigrid_mission"].high.max()) + 1
            self.word_embedding = nn.Embedding(vocabulary, instr_dim)
            self.instr_rnn = nn.GRU(instr_dim, instr_dim, batch_first=True)
            embedding += instr_dim
            places = _place_values(vocabulary, observation_space["minigrid_mission"].shape[0])
        self.register_buffer("mission_place_values", places, persistent=False)
        self._encodings: dict[int, torch.Tensor] = {}
        self._encodings_stamp: tuple | None = None
        self.actor = _head(embedding, action_space.n)
        self.critic = _head(embedding, 1)
        for module in (*self.actor, *self.critic):
            if isinstance(module, nn.Linear):
                _unit_rows_(module)

    @property
    def memory_shape(self) -> tuple[int, int]:
        """The LSTM's hidden and cell state side by side, or none without memory."""
        return (1, 2 * self.memory_dim) if self.memory_rnn is not None else (0, 0)

    def _encode_missions(self, missions: torch.Tensor) -> torch.Tensor:
        """The GRU's output at each mission's last word, `[M, instr_dim]`. The GRU stops at the
        longest mission's last word: its outputs there do not depend on the padding after it,
        and oneDNN's GRU costs per step (GoToObj's 5 words of 8: 0.53 against 0.89 ms forward
        and backward)."""
        last = ((missions != 0).sum(dim=1) - 1).clamp(min=0)
        missions = missions[:, : int(last.max()) + 1]
        outputs, _ = self.instr_rnn(self.word_embedding(missions))
        return outputs[torch.arange(len(missions), device=outputs.device), last]

    def _instruction(self, tokens: torch.Tensor) -> torch.Tensor:
        """`[B, instr_dim]`. A batch holds few distinct missions (each lasts a whole episode),
        so each is encoded once; while acting, once per rollout (`_acting_encodings`)."""
        tokens = tokens.long()
        if self.mission_place_values is None:
            missions, which = torch.unique(tokens, dim=0, return_inverse=True)
            return self._encode_missions(missions)[which]
        # One exact number per mission: a flat unique is ~10x faster than unique rows. (A sum
        # of products, not `@`: CUDA has no integer matmul.)
        keys = (tokens * self.mission_place_values).sum(dim=-1)
        if not torch.is_grad_enabled():
            return self._acting_encodings(keys.tolist(), tokens)
        keys, which = torch.unique(keys, return_inverse=True)
        rows = torch.arange(len(tokens), device=tokens.device)
        missions = tokens[torch.empty_like(keys).scatter_(0, which, rows)]
        return self._encode_missions(missions)[which]

    def _acting_encodings(self, keys: list[int], tokens: torch.Tensor) -> torch.Tensor:
        """Encodings kept by mission while no gradient is taken and the encoder's parameters
        stay the same (any optimizer step, or a load, which changes their version; `train()` and
        `eval()` also start afresh): re-encoding every step was a quarter of the acting forward
        pass. Found by the keys in a dict, without `unique`'s ops (a sixth of the pass)."""
        parameters = (*self.word_embedding.parameters(), *self.instr_rnn.parameters())
        stamp = (_optimizer_steps[0], *((p.data_ptr(), p._version) for p in parameters))
        if stamp != self._encodings_stamp or len(self._encodings) > 4096:
            self._encodings, self._encodings_stamp = {}, stamp
        missing = {key: row for row, key in enumerate(keys) if key not in self._encodings}
        if missing:
            encoded = self._encode_missions(tokens[list(missing.values())])
            self._encodings.update(zip(missing, encoded, strict=True))
        return torch.stack([self._encodings[key] for key in keys])

    def train(self, mode: bool = True) -> "BabyAIRecurrentACModel":
        """Switch mode and forget the cached mission encodings."""
        self._encodings, self._encodings_stamp = {}, None
        return super().train(mode)

    def forward(
        self,
        observations: dict[str, torch.Tensor],
        memory: torch.Tensor,
        prev_actions: torch.Tensor,
        masks: torch.Tensor,
    ) -> tuple[ActorCriticOutput, torch.Tensor]:
        """Convolutions over the view, LSTM memory, the instruction's encoding; actor, critic."""
        image = observations["minigrid_ego_image"]
        steps, tasks = image.shape[:2]
        grid = image.reshape(steps * tasks, *image.shape[2:]).permute(0, 3, 1, 2).float()
        features = self.image_conv(grid).view(steps, tasks, -1)
        if self.memory_rnn is not None:
            features, memory = run_recurrent(self.memory_rnn, features, memory=memory, masks=masks)
        if self.instr_rnn is not None:
            mission = observations["minigrid_mission"].reshape(steps * tasks, -1)
            features = torch.cat([features, self._instruction(mission).view(steps, tasks, -1)], -1)
        output = ActorCriticOutput(
            distributions=Categorical(logits=self.actor(features), validate_args=False),
            values=self.critic(features).squeeze(-1),
        )
        return output, memory
