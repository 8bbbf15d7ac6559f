"""GAE and n-step returns against values computed by hand."""

import pytest
import torch

from stagerl.engine.returns import compute_returns

# One task, four steps: the episode terminates at t=1, is truncated at t=2 (true last
# observation worth 10), and the rollout ends at t=3 with V(next observation) = 5.
ROLLOUT = dict(
    rewards=torch.tensor([[1.0], [2.0], [3.0], [4.0]]),
    values=torch.tensor([[0.5], [1.0], [1.5], [2.0]]),
    terminated=torch.tensor([[False], [True], [False], [False]]),
    truncated=torch.tensor([[False], [False], [True], [False]]),
    bootstrap_values=torch.tensor([[0.0], [0.0], [10.0], [0.0]]),
    last_values=torch.tensor([5.0]),
)


def test_gae_bootstraps_on_truncation_and_never_across_a_terminal_state():
    returns, advantages = compute_returns(**ROLLOUT, gamma=0.9, gae_lambda=0.5, use_gae=True)
    # t=3: 4 + 0.9*5 - 2 = 6.5
    # t=2: truncated, so V(final obs)=10 replaces V(next): 3 + 0.9*10 - 1.5 = 10.5, chain cut
    # t=1: terminated: 2 + 0 - 1 = 1.0
    # t=0: delta = 1 + 0.9*1.0 - 0.5 = 1.4; A = 1.4 + 0.9*0.5*1.0 = 1.85
    assert advantages.flatten().tolist() == pytest.approx([1.85, 1.0, 10.5, 6.5])
    assert returns.flatten().tolist() == pytest.approx([2.35, 2.0, 12.0, 8.5])


def test_nstep_returns_bootstrap_on_truncation_and_at_rollout_end():
    returns, advantages = compute_returns(**ROLLOUT, gamma=0.9, gae_lambda=0.5, use_gae=False)
    # R3 = 4 + 0.9*5; R2 = 3 + 0.9*10; R1 = 2; R0 = 1 + 0.9*2
    assert returns.flatten().tolist() == pytest.approx([2.8, 2.0, 12.0, 8.5])
    assert advantages.flatten().tolist() == pytest.approx([2.3, 1.0, 10.5, 6.5])


def test_gae_with_lambda_one_equals_nstep_advantages():
    gae_returns, gae_adv = compute_returns(**ROLLOUT, gamma=0.9, gae_lambda=1.0, use_gae=True)
    nstep_returns, nstep_adv = compute_returns(**ROLLOUT, gamma=0.9, gae_lambda=1.0, use_gae=False)
    torch.testing.assert_close(gae_returns, nstep_returns)
    torch.testing.assert_close(gae_adv, nstep_adv)


def test_step_both_terminated_and_truncated_counts_as_terminal():
    rollout = {**ROLLOUT, "truncated": torch.tensor([[False], [True], [True], [False]])}
    returns, _ = compute_returns(**rollout, gamma=0.9, gae_lambda=0.5, use_gae=False)
    assert returns[1].item() == pytest.approx(2.0)  # no bootstrap after a real end


def test_tasks_are_independent_columns():
    two = {k: torch.cat([v, torch.zeros_like(v)], dim=-1) for k, v in ROLLOUT.items()}
    returns, _ = compute_returns(**two, gamma=0.9, gae_lambda=0.5, use_gae=True)
    assert returns[:, 0].tolist() == pytest.approx([2.35, 2.0, 12.0, 8.5])
    assert returns[:, 1].tolist() == pytest.approx([0.0] * 4)
