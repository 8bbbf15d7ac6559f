"""Rows of metrics.jsonl: frames/s over the frames and training seconds of their own window
(validation left out), training time on every row, validation rows included; the episode
metrics an early-stopping criterion sees."""

import json

from stagerl.engine.logging import MetricsLogger, TrainingMetrics


def test_rows_after_a_resume_count_only_frames_and_seconds_trained_since(tmp_path, monkeypatch):
    clock = {"now": 100.0}
    monkeypatch.setattr("stagerl.engine.logging.time.monotonic", lambda: clock["now"])
    # resumed at step 9,000 of a run whose last row was at step 0, after 50 s of training
    saved = {"sums": {}, "counts": {}, "last_emit_step": 0, "seconds": 50.0}
    logger = MetricsLogger(
        tmp_path,
        interval=10_000,
        total_steps=20_000,
        start_step=9_000,
        state=saved,
        tensorboard_and_console=False,
    )
    clock["now"] = 102.0
    row = logger.maybe_emit(10_000, stage_index=0, stage="ppo")
    assert (row["fps"], row["time"]) == (500.0, 52.0)  # 1,000 frames in 2 s, not 10,000
    clock["now"] = 103.0
    with logger.paused():  # a validation of 10 s is left out of the next row's frames/s
        logger.log_validation(10_000, stage_index=0, stage="ppo", values={"valid/success": 1.0})
        clock["now"] = 113.0
    clock["now"] = 117.0
    row = logger.maybe_emit(20_000, stage_index=0, stage="ppo")
    assert (row["fps"], row["time"]) == (2_000.0, 67.0)  # 10,000 frames in 15 - 10 s
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["time"]) for r in rows] == [
        (10_000, 52.0),
        (10_000, 53.0),
        (20_000, 67.0),
    ]


def test_a_criterion_sees_the_rows_episode_metrics_as_allenacts_tracker_gives_them():
    row = {"train/success": 0.25, "train/ep_length": 10.0, "fps": 500.0, "loss/ppo": 0.1}
    counts = {"train/success": 4, "train/ep_length": 4, "fps": 1, "loss/ppo": 8}
    metrics = TrainingMetrics.from_row(row, counts)
    assert metrics.means() == {"success": 0.25, "ep_length": 10.0}
    assert metrics.counts() == {"success": 4, "ep_length": 4}
    assert metrics.sums() == {"success": 1.0, "ep_length": 40.0}


def test_a_terminal_gone_stops_the_lines_not_the_rows(tmp_path):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    logger = MetricsLogger(tmp_path, interval=10, total_steps=30)
    logger.console.file = ClosedPipe()  # say, the `| tee` reading stderr was killed
    for step in (10, 20):
        logger.add({"train/success": 1.0})
        assert logger.maybe_emit(step, stage_index=0, stage="ppo")["step"] == step
    logger.log_validation(20, stage_index=0, stage="ppo", values={"valid/success": 1.0})
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [10, 20, 20]
