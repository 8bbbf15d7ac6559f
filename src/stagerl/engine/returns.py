"""Returns and advantages for a `[T, N]` rollout that keeps terminations and truncations apart.

A terminated episode is worth nothing after its last step. A truncated one (a step limit, not a
real end) is worth the value of its true last observation, `bootstrap_values[t]`. Either way
nothing flows back across the episode boundary, since the next step belongs to a new episode.
"""

import torch


def compute_returns(
    *,
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    bootstrap_values: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    gae_lambda: float,
    use_gae: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return `(returns, advantages)`, each `[T, N]`; GAE(gamma, lambda) or n-step returns."""
    num_steps = rewards.shape[0]
    terminal = terminated.float()
    cut = truncated.float() * (1.0 - terminal)  # truncated and not also terminated
    episode_continues = (1.0 - terminal) * (1.0 - cut)
    returns = torch.zeros_like(rewards)
    advantages = torch.zeros_like(rewards)
    next_value = last_values
    running = torch.zeros_like(last_values)  # GAE accumulator, or the n-step return
    if not use_gae:
        running = last_values.clone()
    for t in reversed(range(num_steps)):
        if use_gae:
            value_after = episode_continues[t] * next_value + cut[t] * bootstrap_values[t]
            delta = rewards[t] + gamma * value_after - values[t]
            running = delta + gamma * gae_lambda * episode_continues[t] * running
            advantages[t] = running
            returns[t] = running + values[t]
        else:
            running = rewards[t] + gamma * (
                episode_continues[t] * running + cut[t] * bootstrap_values[t]
            )
            returns[t] = running
            advantages[t] = running - values[t]
        next_value = values[t]
    return returns, advantages
