"""A visual ObjectNav actor-critic: a small CNN on the RGB frame, an embedding of the goal type,
and a GRU over both."""

import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Categorical

from stagerl.errors import ConfigError
from stagerl.models.base import ActorCriticModel, ActorCriticOutput, run_recurrent

MIN_FRAME = 36  # pixels: 8/4, then 4/2, then 3/1 convolutions leave one cell of 36


class ObjectNavActorCritic(ActorCriticModel):
    """Nature-DQN-style convolutions (32x8/4, 64x4/2, 32x3/1) and a linear layer to `hidden`
    layer-normed features of the frame, joined with a `goal_dims` embedding of the goal type,
    into a one-layer GRU of `hidden` units; linear policy and value heads."""

    def __init__(
        self,
        action_space: spaces.Discrete,
        observation_space: spaces.Dict,
        *,
        rgb_uuid: str = "rgb",
        goal_uuid: str = "goal_object_type_ind",
        hidden: int = 256,
        goal_dims: int = 32,
    ) -> None:
        super().__init__(action_space, observation_space)
        self.rgb_uuid, self.goal_uuid = rgb_uuid, goal_uuid
        height, width, channels = observation_space[rgb_uuid].shape
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 32, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        if min(height, width) < MIN_FRAME:
            raise ConfigError(
                f"{type(self).__name__}: frames of {height} x {width} are too small for its "
                f"convolutions; give the RGBSensor at least {MIN_FRAME} x {MIN_FRAME}"
            )
        with torch.no_grad():
            features = self.cnn(torch.zeros(1, channels, height, width)).shape[1]
        # layer norm on the frame's features: imitation from pixels learns about twice as
        # fast per update with it (expert-labelled frames, equal updates)
        self.visual = nn.Sequential(nn.Linear(features, hidden), nn.LayerNorm(hidden), nn.ReLU())
        types = int(observation_space[goal_uuid].high.max()) + 1
        self.goal_embedding = nn.Embedding(types, goal_dims)
        self.rnn = nn.GRU(hidden + goal_dims, hidden)
        self.actor = nn.Linear(hidden, action_space.n)
        self.critic = nn.Linear(hidden, 1)
        self.hidden = hidden

    @property
    def memory_shape(self) -> tuple[int, int]:
        """One GRU layer of `hidden` units."""
        return (1, self.hidden)

    def forward(
        self,
        observations: dict[str, torch.Tensor],
        memory: torch.Tensor,
        prev_actions: torch.Tensor,
        masks: torch.Tensor,
    ) -> tuple[ActorCriticOutput, torch.Tensor]:
        """Act on `[T, N]` observations; the GRU's memory is reset where masks are 0."""
        steps, tasks = masks.shape
        rgb = observations[self.rgb_uuid].reshape(
            steps * tasks, *self.observation_space[self.rgb_uuid].shape
        )
        frames = rgb.permute(0, 3, 1, 2).float() / 255.0
        visual = self.visual(self.cnn(frames)).view(steps, tasks, -1)
        goal = self.goal_embedding(observations[self.goal_uuid].reshape(steps, tasks).long())
        features, memory = run_recurrent(
            self.rnn, torch.cat([visual, goal], -1), memory=memory, masks=masks
        )
        logits = self.actor(features)
        values = self.critic(features).squeeze(-1)
        return ActorCriticOutput(Categorical(logits=logits), values), memory
