"""The command line: bad input exits 2 with a short message naming the file or field; a
finished run says how to look at it."""

import gc
import json
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from stagerl import cli
from stagerl.tasks import vector
from tests.variants import fixture_variant

FIXTURES = Path(__file__).parent / "fixtures"


def _forbid_workers(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a worker process was started")

    monkeypatch.setattr(vector.VectorSampler, "__init__", refuse)


ONE_CHANNEL_MODEL = """from gymnasium import spaces

        image = spaces.Box(0, 255, (7, 7, 1))  # the sensor gives three channels
        observations = spaces.Dict({"minigrid_ego_image": image})
        return cls.MODEL(spaces.Discrete(7), observations, use_memory=True, use_instr=False)"""


ALLENACT_VALUES_MODEL = """model = super().create_model(memory_dim=32, **kwargs)
        forward = model.forward

        def allenact_forward(*args):  # AllenAct's critics give values shaped [T, N, 1]
            output, memory = forward(*args)
            output.values = output.values[..., None]
            return output, memory

        model.forward = allenact_forward
        return model"""
WRONG_KEY_MODEL = """model = super().create_model(memory_dim=32, **kwargs)
        model.forward = lambda observations, *args: observations["image"]
        return model"""
EXPERT_READING_MODEL = """model = super().create_model(memory_dim=32, **kwargs)
        forward = model.forward
        model.forward = lambda obs, *args: (obs["expert_action"], forward(obs, *args))[1]
        return model"""
NO_MEMORY_MODEL = """model = super().create_model(memory_dim=32, **kwargs)
        forward = model.forward
        model.forward = lambda *args: forward(*args)[0]  # the memory left out
        return model"""


@pytest.mark.parametrize(
    ("fixture", "replacements", "named"),
    [
        ("bad_loss_name.py", {}, ["'nope'", "named_losses"]),
        (
            "tiny_ppo.py",
            {'Builder(LambdaLR, {"lr_lambda": LinearDecay(steps=cls.STEPS)})': "lambda o: 0.5"},
            ["TrainingPipeline.lr_scheduler_builder=0.5 is invalid"],
        ),
        (
            "tiny_ppo.py",
            {
                'Builder(LambdaLR, {"lr_lambda": LinearDecay(steps=cls.STEPS)})': (
                    "lambda o: __import__('torch').optim.lr_scheduler.ReduceLROnPlateau(o)"
                )
            },
            ["TrainingPipeline.lr_scheduler_builder=<torch.optim.lr_scheduler.ReduceLROnPlateau"],
        ),
        (
            "tiny_ppo.py",
            {
                'Builder(LambdaLR, {"lr_lambda": LinearDecay(steps=cls.STEPS)})': (
                    "lambda o: ChainedScheduler([LambdaLR(o, lambda epoch: 1.0)])"
                ),
                "from torch.optim.lr_scheduler import LambdaLR": (
                    "from torch.optim.lr_scheduler import ChainedScheduler, LambdaLR"
                ),
            },
            ["TrainingPipeline.lr_scheduler_builder=<torch.optim.lr_scheduler.ChainedScheduler"],
        ),
        (
            "tiny_ppo.py",
            {"return super().create_model(memory_dim=32, **kwargs)": ONE_CHANNEL_MODEL},
            ["built for 'minigrid_ego_image' shaped (7, 7, 1)", "give it shaped (7, 7, 3)"],
        ),
        (
            "tiny_ppo.py",
            {"return super().create_model(memory_dim=32, **kwargs)": ALLENACT_VALUES_MODEL},
            [
                "TinyPPO.create_model(): for one step of 2 tasks the model's values are shaped "
                "(1, 2, 1), expected (1, 2)"
            ],
        ),
        (
            "tiny_ppo.py",
            {"return super().create_model(memory_dim=32, **kwargs)": WRONG_KEY_MODEL},
            ["TinyPPO.create_model(): its model's forward raised KeyError: 'image'"],
        ),
        (
            "tiny_dagger_ppo.py",
            {
                "return super().create_model(memory_dim=32, **kwargs)": EXPERT_READING_MODEL,
                "save_interval=256,": "save_interval=256, validation=__import__('stagerl')"
                ".Validation(episodes=2),",
            },
            [
                "TinyDaggerThenPPO.create_model() (validation tasks): its model's forward raised "
                "KeyError: 'expert_action'"
            ],
        ),
        (
            "tiny_ppo.py",
            {"return super().create_model(memory_dim=32, **kwargs)": NO_MEMORY_MODEL},
            ["forward returned ActorCriticOutput, expected (ActorCriticOutput, memory)"],
        ),
        (
            "tiny_ppo.py",
            {"STEPS = 1024": "STEPS = 1024\n    MAX_STEPS = -3"},
            ["TinyPPO.MAX_STEPS=-3"],
        ),
        ("tiny_ppo.py", {'return "TinyPPO"': "return None"}, ["TinyPPO.tag() returned None"]),
        (
            "tiny_ppo.py",
            {"STEPS = 1024": "STEPS = 1024\n    NUM_TRAIN_SAMPLER = 2"},
            [
                "TinyPPO.NUM_TRAIN_SAMPLER is not a setting of MiniGridExperimentConfig: did you "
                "mean NUM_TRAIN_SAMPLERS?"
            ],
        ),
        ("tiny_ppo.py", {'return "TinyPPO"': 'return "../up"'}, ["tag() returned '../up'"]),
    ],
    ids=[
        "unknown-loss-name",
        "no-lr-scheduler-built",
        "lr-scheduler-of-a-metric",
        "lr-scheduler-without-a-step-count",
        "model-of-other-observations",
        "model-with-allenacts-value-shape",
        "model-reading-an-observation-not-given",
        "model-reading-the-expert-validated",
        "model-returning-no-memory",
        "negative-max-steps",
        "no-tag",
        "misspelt-class-setting",
        "tag-leaving-the-output-directory",
    ],
)
def test_a_bad_experiment_fails_before_any_worker_starts(
    fixture, replacements, named, tmp_path, monkeypatch, capsys
):
    _forbid_workers(monkeypatch)
    config = fixture_variant(tmp_path, fixture, replacements)
    assert cli.main(["train", str(config), "-o", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert all(part in err for part in named), err
    assert not list(tmp_path.glob("runs/*"))  # no run directory left behind, nor its tag's


def test_syntax_error_exits_2_in_a_few_lines_naming_the_file():
    result = subprocess.run(
        [sys.executable, "-m", "stagerl", "train", str(FIXTURES / "syntax_error.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "syntax_error.py:4" in result.stderr
    assert len(result.stderr.strip().splitlines()) < 15
    assert "Traceback" not in result.stderr


def test_the_cyclic_collector_is_off_during_start_up_only(tmp_path, monkeypatch):
    from stagerl.engine.trainer import Trainer
    from stagerl.experiment import LoadedExperiment

    seen = {}
    build = LoadedExperiment.call

    def call(self, *args, **kwargs):
        seen.setdefault("start-up", gc.isenabled())
        return build(self, *args, **kwargs)

    def train(self, *args, **kwargs):
        seen["training"] = gc.isenabled()
        return self.run_dir / "final.pt"

    monkeypatch.setattr(LoadedExperiment, "call", call)
    monkeypatch.setattr(Trainer, "train", train)
    assert cli.main(["train", str(FIXTURES / "tiny_ppo.py"), "-o", str(tmp_path)]) == 0
    assert seen == {"start-up": False, "training": True} and gc.isenabled()
    assert cli.main(["train", str(tmp_path / "nowhere.py")]) == 2  # a failed start-up too
    assert gc.isenabled()
    gc.disable()  # a caller's choice stands
    try:
        assert cli.main(["train", str(FIXTURES / "tiny_ppo.py"), "-o", str(tmp_path)]) == 0
        assert seen["training"] is False and not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.timeout(120)
def test_the_command_exits_without_teardown_having_written_everything(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    command = [sys.executable, "-m", "stagerl", "train", str(FIXTURES / "tiny_ppo.py")]
    done = subprocess.run([*command, "-o", str(tmp_path)], capture_output=True, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.decode().rstrip().endswith("/tensorboard")  # its last line, flushed
    (run_dir,) = tmp_path.glob("TinyPPO/*")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1024 and (run_dir / "checkpoints" / "ckpt_000000001024.pt").exists()
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert events.Scalars("train/reward")[-1].step == 1024


def test_only_a_successful_train_skips_teardown_and_after_the_exit_handlers(tmp_path, monkeypatch):
    from stagerl.engine.trainer import Trainer

    exits = []

    class FastExit(Exception):
        pass

    def fast_exit(code):
        exits.append(f"os._exit({code})")
        raise FastExit

    monkeypatch.setattr(cli.os, "_exit", fast_exit)
    monkeypatch.setattr(cli.atexit, "_run_exitfuncs", lambda: exits.append("exit handlers"))
    monkeypatch.setattr(Trainer, "train", lambda self, *args, **kwargs: self.run_dir / "x.pt")
    train = ["stagerl", "train", str(FIXTURES / "tiny_ppo.py"), "-o"]
    monkeypatch.setattr(sys, "argv", [*train, str(tmp_path / "a")])
    with pytest.raises(FastExit):
        cli.run()
    assert exits == ["exit handlers", "os._exit(0)"]
    exits.clear()
    gate = threading.Event()
    waiting = threading.Thread(target=gate.wait)  # the experiment's, not a daemon
    waiting.start()
    monkeypatch.setattr(sys, "argv", [*train, str(tmp_path / "b")])
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.run()
    finally:
        gate.set()
        waiting.join()
    assert exit_info.value.code == 0 and exits == []  # the ordinary exit waits for it
    monkeypatch.setattr(sys, "argv", ["stagerl", "train", str(tmp_path / "nowhere.py")])
    with pytest.raises(SystemExit) as exit_info:
        cli.run()
    assert exit_info.value.code == 2 and exits == []


def test_missing_config_file(tmp_path, capsys):
    assert cli.main(["train", str(tmp_path / "nowhere.py")]) == 2
    assert "nowhere.py: experiment file not found" in capsys.readouterr().err


def test_file_without_experiment_config(tmp_path, capsys):
    config = tmp_path / "empty.py"
    config.write_text("x = 1\n")
    assert cli.main(["train", str(config)]) == 2
    assert "empty.py: expected exactly one concrete ExperimentConfig" in capsys.readouterr().err


def test_a_config_class_missing_methods_names_them(tmp_path, capsys):
    config = tmp_path / "half.py"
    config.write_text(
        "from stagerl.experiment import ExperimentConfig\n\n\n"
        "class Half(ExperimentConfig):\n"
        "    @classmethod\n"
        "    def tag(cls):\n"
        "        return 'half'\n"
    )
    assert cli.main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "found none; Half lacks" in err and "machine_params" in err


def test_config_that_raises_on_import_names_the_file(tmp_path, capsys):
    config = tmp_path / "raises.py"
    config.write_text("import not_a_module_anywhere\n")
    assert cli.main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "raises.py" in err and "not_a_module_anywhere" in err


@pytest.mark.parametrize(
    "env_ids",
    ['"MiniGrid-NoSuchEnv-v0"', '["MiniGrid-Empty-Random-5x5-v0", "MiniGrid-NoSuchEnv-v0"]'],
    ids=["the-only-one", "a-later-scene"],
)
def test_unknown_env_id_is_reported_before_workers(env_ids, tmp_path, monkeypatch, capsys):
    _forbid_workers(monkeypatch)
    config = fixture_variant(tmp_path, "tiny_ppo.py", {'"MiniGrid-Empty-Random-5x5-v0"': env_ids})
    assert cli.main(["train", str(config), "-o", str(tmp_path)]) == 2
    assert "MiniGrid-NoSuchEnv-v0" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_unwritable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = cli.main(["train", str(FIXTURES / "tiny_ppo.py"), "-o", str(blocker / "sub")])
    assert code == 2
    assert "cannot create a run there" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "x.py", "--keep-checkpoints", "0"], "0 is not a positive integer"),
        (["train", "x.py", "--max-nonfinite-updates", "0"], "0 is not a positive integer"),
        (["eval", "x.py", "-c", "c.pt", "--episodes", "0"], "0 is not a positive integer"),
        (["train", "x.py", "-s", "abc"], "argument -s/--seed: 'abc' is not a whole number"),
    ],
)
def test_bad_numbers_are_rejected_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_resuming_a_path_that_does_not_exist_says_so(tmp_path, capsys):
    missing = tmp_path / "nope"
    resume = ["--resume", str(missing), "-o", str(tmp_path)]
    assert cli.main(["train", str(FIXTURES / "tiny_ppo.py"), *resume]) == 2
    assert (
        f"--resume {missing}: no such checkpoint file or run directory" in capsys.readouterr().err
    )


def test_missing_dataset_fails_before_any_worker_starts(tmp_path, monkeypatch, capsys):
    _forbid_workers(monkeypatch)
    monkeypatch.setenv("STAGERL_DATASET", str(tmp_path / "no-such-dataset"))
    code = cli.main(["train", str(FIXTURES / "tiny_offpolicy_bc.py"), "-o", str(tmp_path)])
    assert code == 2
    assert f"{tmp_path / 'no-such-dataset'}: no such dataset" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("dict(lr=1e-3)", "dict(lr=-1.0)", "TrainingPipeline.optimizer_builder raised ValueError"),
        (
            '{"lr_lambda": LinearDecay(steps=cls.STEPS)}',
            '{"lr_lambda": 5}',
            "TrainingPipeline.lr_scheduler_builder raised TypeError",
        ),
        ("memory_dim=32", "memory_dim=-32", "TinyPPO.create_model() raised ValueError"),
        (
            "    STEPS = 1024\n",
            "    STEPS = 1024\n\n    @classmethod\n    def make_sampler_fn(cls, **kwargs):\n"
            "        return kwargs['no_such_argument']\n",
            "TinyPPO.make_sampler_fn() raised KeyError",
        ),
        (
            '{"ppo_loss": PPO(clip_decay=LinearDecay(cls.STEPS), **PPOConfig)}',
            '{"ppo_loss": Builder(PPO, {"clip_parm": 0.2}, default=PPOConfig)}',
            "TrainingPipeline.named_losses['ppo_loss'] (Builder(PPO,",
        ),
    ],
    ids=["optimizer", "lr-scheduler", "model", "task-sampler", "loss-builder"],
)
def test_a_builder_that_raises_exits_2_naming_it_before_any_worker_starts(
    old, new, named, tmp_path, monkeypatch, capsys
):
    _forbid_workers(monkeypatch)
    config = fixture_variant(tmp_path, "tiny_ppo.py", {old: new})
    assert cli.main(["train", str(config), "-o", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert named in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err


def test_a_gpu_asked_for_on_a_machine_without_one_exits_2_naming_the_field(
    tmp_path, monkeypatch, capsys
):
    _forbid_workers(monkeypatch)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    config = fixture_variant(
        tmp_path, "tiny_ppo.py", {"STEPS = 1024": "STEPS = 1024\n    DEVICES = ['cuda']"}
    )
    assert cli.main(["train", str(config), "-o", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "MachineParams.devices asks for 'cuda'" in err and "no CUDA device" in err


@pytest.mark.parametrize(
    ("sensors", "loss", "message"),
    [
        ("ExpertActionSensor(7, uuid='mine')", "Imitation()", None),
        (
            "ExpertActionSensor(7, uuid='mine')",
            "Imitation(expert_sensor=ExpertActionSensor(7, uuid='theirs'))",
            "reads uuid 'theirs', but the tasks' ExpertActionSensors are ['mine']",
        ),
        (
            "ExpertActionSensor(3)",
            "Imitation()",
            "ExpertActionSensor(uuid='expert_action').nactions=3 is invalid: expected 7,",
        ),
        ("ExpertActionSensor", "Imitation()", "SENSORS[1]=<class"),
    ],
    ids=["bound-to-the-only-expert-sensor", "named-sensor-missing", "too-few-actions", "a-class"],
)
def test_imitation_reads_the_experiments_expert_sensor_or_fails_before_workers(
    sensors, loss, message, tmp_path, monkeypatch, capsys
):
    from stagerl.engine.setup import build_training_setup
    from stagerl.experiment import load_experiment

    config = fixture_variant(
        tmp_path,
        "tiny_dagger_ppo.py",
        {
            "ExpertActionSensor(nactions=7)": sensors,
            '"imitation_loss": Imitation()': f'"imitation_loss": {loss}',
        },
    )
    if message is None:
        built = build_training_setup(load_experiment(config), seed=0)
        assert built.pipeline.named_losses["imitation_loss"].expert_uuid == "mine"
        return
    _forbid_workers(monkeypatch)
    assert cli.main(["train", str(config), "-o", str(tmp_path / "runs")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("stage_losses", "message"),
    [
        ('["imitation_loss"]', None),
        ('["ppo_loss"]', "pipeline_stages[0].teacher_forcing: the tasks have several"),
    ],
    ids=["the-stages-imitation-sensor", "no-imitation-loss-to-say-which"],
)
def test_teacher_forcing_executes_the_sensor_its_stages_imitation_loss_reads(
    stage_losses, message, tmp_path
):
    from stagerl.engine.setup import build_training_setup
    from stagerl.errors import ConfigError
    from stagerl.experiment import load_experiment

    second = "ExpertActionSensor(7, uuid='second')"
    config = fixture_variant(
        tmp_path,
        "tiny_dagger_ppo.py",
        {
            "ExpertActionSensor(nactions=7)": f"ExpertActionSensor(7, uuid='first'), {second}",
            '"imitation_loss": Imitation()': f'"imitation_loss": Imitation(expert_sensor={second})',
            'loss_names=["imitation_loss"]': f"loss_names={stage_losses}",
        },
    )
    if message is None:
        assert build_training_setup(load_experiment(config), seed=0).teachers == {0: "second"}
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_training_setup(load_experiment(config), seed=0)


def test_train_ends_with_commands_that_evaluate_and_plot_the_run(tmp_path, capsys):
    config = FIXTURES / "tiny_ppo.py"
    assert cli.main(["train", str(config), "-o", str(tmp_path), "-s", "1"]) == 0
    err = capsys.readouterr().err
    lines = [line.strip().split(": ", 1) for line in err.splitlines() if ": " in line]
    commands = {key: text for key, text in lines if key in ("evaluate", "plot", "watch")}
    (run_dir,) = (tmp_path / "TinyPPO").iterdir()
    assert commands["watch"] == f"tensorboard --logdir {run_dir / 'tensorboard'}"
    assert commands["evaluate"].startswith(f"stagerl eval {config} -c {run_dir}/checkpoints/")
    assert cli.main(shlex.split(commands["plot"])[1:]) == 0
    assert (run_dir / "curves.png").stat().st_size > 0
