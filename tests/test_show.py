"""`stagerl show`: the plan training would run, built and checked as training builds it,
without starting a worker."""

from pathlib import Path

from stagerl import cli
from tests.test_cli import FIXTURES, _forbid_workers
from tests.variants import fixture_variant


def test_show_prints_each_stage_with_budget_and_schedules_starting_no_worker(monkeypatch, capsys):
    _forbid_workers(monkeypatch)
    config = Path(__file__).parents[1] / "projects/babyai/gotolocal_dagger_then_ppo.py"
    assert cli.main(["show", str(config)]) == 0
    rows = [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("│")
    ]
    # stage, losses, steps, rollouts of 16 x 32 frames, updates, teacher forcing, clip, LR; a
    # stage runs whole rollouts: 196 x 512 = 100,352 frames for its 100,000. Each in the
    # first, middle and last rollout: an update uses the LR of the frames before its rollout
    # (the imitation stage's last, after 99,840 frames: 1e-3 still; PPO's first: 1e-3 x 0.25
    # x (1 - 352 / 50,000)) and the clip of the stage's frames after it (0.1 x (1 - 512 / 50,000))
    assert rows == [
        ["0", "imitation_loss (1)", "100,352", "196", "1,568 (4 x 2)", "1 / 0 / 0", "-",
         "0.001 / 0.001 / 0.001"],
        ["1", "ppo_loss (1)", "50,176", "98", "784 (4 x 2)", "-", "0.099 / 0.0488 / 0",
         "0.000248 / 0.000123 / 0"],
    ]  # fmt: skip


def test_show_of_task_samplers_given_per_rank_plans_rank_0s_part_of_all_ranks_frames(
    tmp_path, monkeypatch, capsys
):
    _forbid_workers(monkeypatch)
    per_rank = "    @classmethod\n    def machine_params(cls, mode='train', **kwargs):\n"
    per_rank += "        return MachineParams(nprocesses=[3, 2] if mode == 'train' else 4)\n"
    config = fixture_variant(
        tmp_path,
        "tiny_ppo.py",
        {
            "    STEPS = 1024\n": f"    STEPS = 1024\n\n{per_rank}",
            "from stagerl import PPO": "from stagerl import MachineParams, PPO",
        },
    )
    assert cli.main(["show", str(config)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "2 trainer ranks of [3, 2] task samplers; rank 0: 3 task samplers" in out, out
    # 5 tasks x 16 steps a rollout: the stage's 1,024 steps take 13 rollouts, 1,040 frames
    assert "= 80 frames; 1,040 steps in all" in out


def test_show_of_a_bad_pipeline_exits_2_naming_the_field(monkeypatch, capsys):
    _forbid_workers(monkeypatch)
    assert cli.main(["show", str(FIXTURES / "bad_loss_name.py")]) == 2
    assert "pipeline_stages[0].loss_names contains 'nope'" in capsys.readouterr().err
