"""The stage loop: collect a rollout, compute returns, update, log, checkpoint; repeat.

Steps count environment frames summed over all tasks. Each stage runs until its own step count
reaches `max_stage_steps`; the LR schedule follows the total step count; losses and teacher
forcing follow the stage's step count.
"""

import contextlib
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from stagerl.components import ask_criterion
from stagerl.engine.aggregation import ExpertDataBuffer
from stagerl.engine.checkpoint import CHECKPOINT_FORMAT, CheckpointRotation
from stagerl.engine.distributed import Ranks
from stagerl.engine.learner import AggregatedData, WeightedLoss, step_lr_scheduler, update
from stagerl.engine.logging import MetricsLogger, TrainingMetrics
from stagerl.engine.offpolicy import OffPolicyLearner
from stagerl.engine.progress import Interrupted, TrainingState
from stagerl.engine.resume import RankShare, drop_unused_dagger_buffer, rank_share
from stagerl.engine.rollout import TeacherForcing, collect_rollout, last_values
from stagerl.engine.seeding import rank_seed, rng_state, seed_everything, set_rng_state
from stagerl.engine.setup import TrainingSetup, build_training_setup
from stagerl.engine.storage import RolloutStorage
from stagerl.engine.validation import Validator
from stagerl.errors import WorkerError
from stagerl.experiment import LoadedExperiment
from stagerl.pipeline import PipelineStage
from stagerl.tasks.vector import VectorSampler


class Trainer:
    """Runs a pipeline's stages for one experiment in one run directory."""

    def __init__(
        self,
        experiment: LoadedExperiment,
        *,
        run_dir: Path,
        seed: int,
        keep_checkpoints: int = 5,
        max_nonfinite_updates: int = 10,
        resume: dict[str, Any] | None = None,
        max_sampler_processes: int | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        self.experiment = experiment
        self.run_dir = run_dir
        self.rotation = CheckpointRotation(keep_checkpoints)
        self.max_nonfinite_updates = max_nonfinite_updates
        self.ranks = ranks = ranks or Ranks()
        self.seed = resume["seed"] if resume else seed
        self.generators = seed_everything(self.seed)  # the same on every rank: the same model
        self.setup: TrainingSetup = build_training_setup(
            experiment,
            seed=self.seed,
            resume=resume,
            max_sampler_processes=max_sampler_processes,
            ranks=ranks,
        )
        ranks.broadcast_parameters(self.setup.model)
        self.pipeline = self.setup.pipeline
        self.state = TrainingState(**resume["state"]) if resume else TrainingState()
        self.resumed_steps = self.state.total_steps if resume else -1
        self.share: RankShare | None = None  # this rank's part of the checkpoint resumed
        if resume:
            setup = self.setup
            self.share = rank_share(
                resume,
                rank=ranks.rank,
                world_size=ranks.world_size,
                first_task=setup.first_task,
                num_tasks=setup.num_tasks,
            )
            stages = self.pipeline.pipeline_stages
            drop_unused_dagger_buffer(self.share, stages, resume["dagger_buffer_stage"])
        if self.share is not None and self.share.rng is not None:
            set_rng_state(self.share.rng, self.generators)
        elif ranks.rank > 0 or self.share is not None:  # each rank samples its own actions
            self.generators = seed_everything(
                rank_seed(self.seed, rank=ranks.rank, total_steps=self.state.total_steps)
            )
        self.resume = resume
        self.stop_signal: int | None = None
        self.buffer: ExpertDataBuffer | None = None
        self.buffer_stage = -1
        self.validator: Validator | None = None
        self.offpolicy = self._offpolicy_learners()

    def _losses(self, stage: PipelineStage) -> list[WeightedLoss]:
        return self._weighted(stage.loss_names, stage.loss_weights)

    def _weighted(self, names: list[str], weights: list[float]) -> list[WeightedLoss]:
        return [
            WeightedLoss(name, self.pipeline.named_losses[name], weight)
            for name, weight in zip(names, weights, strict=True)
        ]

    def _offpolicy_learners(self) -> dict[int, OffPolicyLearner]:
        """A learner per remaining stage with an off-policy component, restored on resume."""
        learners = {}
        iterators, self.setup.offpolicy_iterators = self.setup.offpolicy_iterators, {}  # theirs
        for index, iterator in iterators.items():
            component = self.pipeline.pipeline_stages[index].offpolicy_component
            losses = self._weighted(component.loss_names, component.loss_weights)
            learners[index] = OffPolicyLearner(
                component,
                iterator,
                losses=losses,
                device=self.setup.device,
                ranks=self.ranks,
                where=f"pipeline_stages[{index}].offpolicy_component",
            )
            if self.share and (saved := self.share.offpolicy.get(index)) is not None:
                learners[index].load_state_dict(saved)
        return learners

    def _teacher(self, stage: PipelineStage) -> TeacherForcing | None:
        if stage.teacher_forcing is None:
            return None
        return TeacherForcing(
            schedule=stage.teacher_forcing,
            stage_steps=self.state.stage_steps,
            frames_per_step=self.setup.total_tasks,
            expert_uuid=self.setup.teachers[self.state.stage_index],
            generator=self.generators["teacher_rng"],
            where=f"pipeline_stages[{self.state.stage_index}].teacher_forcing",
        )

    def _aggregated(self, stage_index: int, storage: RolloutStorage) -> AggregatedData | None:
        """The stage's DAgger dataset, created when the stage first needs it; a stage without
        one drops an earlier stage's (no later stage uses it, so checkpoints leave it out)."""
        stage = self.pipeline.pipeline_stages[stage_index]
        settings = stage.dataset_aggregation
        if settings is None:
            self.buffer, self.buffer_stage = None, -1
            return None
        if self.buffer is None or self.buffer_stage != stage_index:
            self.buffer = ExpertDataBuffer(
                capacity=settings.max_sequences,
                num_steps=storage.num_steps,
                observation_space=self.setup.observation_space,
                memory_shape=self.setup.model.memory_shape,
                device=self.setup.device,
            )
            self.buffer_stage = stage_index
        losses = [w for w in self._losses(stage) if w.name in self.pipeline.imitation_losses(stage)]
        return AggregatedData(self.buffer, settings.sequences_per_minibatch, losses)

    def _learn(self, storage: RolloutStorage, logger: MetricsLogger, stage: PipelineStage) -> None:
        pipeline, model = self.pipeline, self.setup.model
        values = last_values(model, storage)
        storage.compute_returns(
            values,
            gamma=pipeline.setting(stage, "gamma"),
            gae_lambda=pipeline.setting(stage, "gae_lambda"),
            use_gae=pipeline.setting(stage, "use_gae"),
            bootstrap_time_limit=pipeline.bootstrap_time_limit,
            normalize=self.ranks.standardize,
        )
        aggregated = self._aggregated(self.state.stage_index, storage)
        # the workers have only the snapshot to pickle meanwhile (`ask_for_snapshot`)
        torch.set_num_threads(self.setup.machine.threads_for_updates())
        start, allreduce_before = time.perf_counter(), self.ranks.allreduce_seconds
        outcome = update(
            model=model,
            optimizer=self.setup.optimizer,
            storage=storage,
            losses=self._losses(stage),
            stage_steps=self.state.stage_steps,
            num_mini_batch=pipeline.setting(stage, "num_mini_batch"),
            update_repeats=pipeline.setting(stage, "update_repeats"),
            max_grad_norm=pipeline.setting(stage, "max_grad_norm"),
            generator=self.generators["minibatch_rng"],
            aggregated=aggregated,
            ranks=self.ranks,
        )
        torch.set_num_threads(1)
        if self.ranks.distributed:
            allreduce = self.ranks.allreduce_seconds - allreduce_before
            logger.add({"allreduce_share": allreduce / (time.perf_counter() - start)})
        if aggregated is not None:
            aggregated.buffer.add(storage)
            logger.add({"aggregated_sequences": aggregated.buffer.size})
        logger.add(outcome.info, prefix="loss/")
        logger.add({"skipped_updates": outcome.skipped})
        self.state.count_nonfinite(outcome, offpolicy=False, limit=self.max_nonfinite_updates)

    def _learn_offpolicy(
        self, learner: OffPolicyLearner, logger: MetricsLogger, stage: PipelineStage
    ) -> None:
        self.setup.model.train()
        torch.set_num_threads(self.setup.machine.threads_for_updates())
        outcome = learner.update(
            model=self.setup.model,
            optimizer=self.setup.optimizer,
            stage_steps=self.state.stage_steps,
            max_grad_norm=self.pipeline.setting(stage, "max_grad_norm"),
        )
        torch.set_num_threads(1)
        logger.add(outcome.info, prefix="offpolicy/")
        logger.add({"offpolicy/skipped_updates": outcome.skipped})
        logger.set({"offpolicy/samples": learner.samples, "offpolicy/epoch": learner.epoch})
        self.state.count_nonfinite(outcome, offpolicy=True, limit=self.max_nonfinite_updates)

    def _rollout_and_update(
        self,
        sampler: VectorSampler,
        storage: RolloutStorage,
        logger: MetricsLogger,
        stage: PipelineStage,
    ) -> None:
        pipeline, model, state = self.pipeline, self.setup.model, self.state
        teacher = self._teacher(stage)
        observed = sampler.use_expert(pipeline.reads_expert(stage) or self.setup.model_reads_expert)
        if observed is not None:  # experts back on: the first row's readings are theirs now
            storage.set_observations(0, observed)
        # Train mode, as AllenAct collects: the rollout's log-probs and values are the ones the
        # update's first pass recomputes (in eval mode, dropout or batch norm would make PPO's
        # ratio differ from 1 before any step). Validation and evaluation use eval mode.
        model.train()
        # Collecting changes only the samplers and RNGs; with these, a worker fault mid-rollout
        # can still be checkpointed exactly as of the rollout's start.
        boundary = {"samplers": sampler.snapshot(), "rng": rng_state(self.generators)}
        try:
            result = collect_rollout(model=model, sampler=sampler, storage=storage, teacher=teacher)
        except WorkerError as error:
            if self.ranks.distributed:  # the other ranks cannot join a checkpoint now
                raise WorkerError(f"rank {self.ranks.rank}: {error}") from None
            checkpoint = self._save(storage, logger, **boundary)
            raise WorkerError(f"{error}\ncheckpoint before this rollout: {checkpoint}") from None
        sampler.ask_for_snapshot()  # the next boundary's (or checkpoint's), pickled meanwhile
        steps = self.setup.frames_per_rollout
        state.stage_steps += steps
        state.total_steps += steps
        state.rollout_count += 1
        for episode in result.episodes:
            logger.add(episode, prefix="train/")
        if teacher is not None:
            logger.add(
                {
                    "teacher_forcing": sum(result.teacher_forcing) / len(result.teacher_forcing),
                    "expert_action_fraction": result.expert_steps
                    / (storage.num_steps * storage.num_tasks),
                }
            )
        if stage.loss_names:
            self._learn(storage, logger, stage)
        if state.stage_index in self.offpolicy:
            self._learn_offpolicy(self.offpolicy[state.stage_index], logger, stage)
        logger.add({"lr": self.setup.optimizer.param_groups[0]["lr"]})  # what the updates used
        step_lr_scheduler(self.setup.lr_scheduler, state.total_steps)
        storage.start_next_rollout()
        period = pipeline.advance_scene_rollout_period
        if period and state.rollout_count % period == 0:
            sampler.next_scene()

    def _restore_buffer(self, storage: RolloutStorage) -> None:
        if self.share.dagger_buffer is None:
            return
        aggregated = self._aggregated(self.resume["dagger_buffer_stage"], storage)
        aggregated.buffer.load_state_dict(self.share.dagger_buffer)

    def _save(
        self,
        storage: RolloutStorage,
        logger: MetricsLogger,
        *,
        samplers: list[bytes],
        rng: dict[str, Any],
    ) -> Path | None:
        """Checkpoint the run as of the given sampler snapshots and RNG states: every rank
        hands its part to rank 0, which writes (and returns the path; the others None)."""
        setup, steps = self.setup, self.state.total_steps
        self.state.last_save_steps = steps
        part = {
            "samplers": samplers,
            "rng": rng,
            "storage": storage.carry_state(),
            "logger": logger.state_dict(),
            "dagger_buffer": self.buffer.state_dict() if self.buffer else None,
            "offpolicy": {index: learner.state_dict() for index, learner in self.offpolicy.items()},
        }
        parts = self.ranks.gather(part, "a checkpoint")
        if parts is None:
            return None
        payload = {
            "format": CHECKPOINT_FORMAT,
            "experiment": self.experiment.name,
            "tag": self.experiment.tag(),
            "config_source": self.experiment.source,
            "loaded_sources": self.experiment.loaded_sources,
            "seed": self.seed,
            "num_tasks": setup.total_tasks,
            "world_size": self.ranks.world_size,
            "model": setup.model.state_dict(),
            "optimizer": setup.optimizer.state_dict(),
            "lr_scheduler": setup.lr_scheduler.state_dict() if setup.lr_scheduler else None,
            "state": asdict(self.state),
            "dagger_buffer_stage": self.buffer_stage,
            "ranks": parts,
        }
        return self.rotation.save(
            self.run_dir, total_steps=steps, payload=payload, resumed_steps=self.resumed_steps
        )

    def _save_now(
        self, sampler: VectorSampler, storage: RolloutStorage, logger: MetricsLogger
    ) -> Path | None:
        return self._save(
            storage, logger, samplers=sampler.snapshot(), rng=rng_state(self.generators)
        )

    def _handle_signal(self, signum: int, frame: Any) -> None:
        if self.stop_signal is not None:
            raise KeyboardInterrupt  # second signal: stop at once
        self.stop_signal = signum

    def train(self, stop_after_steps: int | None = None) -> Path | None:
        """Run the remaining stages (or stop once `stop_after_steps` total steps are done, for
        smoke tests); return the final checkpoint's path (on rank 0; None on the others)."""
        setup, state, pipeline = self.setup, self.state, self.pipeline
        storage = RolloutStorage(
            num_steps=pipeline.num_steps,
            num_tasks=setup.num_tasks,
            observation_space=setup.observation_space,
            memory_shape=setup.model.memory_shape,
            device=setup.device,
        )
        logger = MetricsLogger(
            self.run_dir if self.ranks.is_main else None,
            interval=pipeline.metric_accumulate_interval,
            total_steps=pipeline.total_steps,
            tensorboard_and_console=pipeline.should_log,
            start_step=state.total_steps,
            state=self.share.logger if self.share else None,
            merge=self.ranks.merge_metrics,
        )
        previous = {
            s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            with (
                setup.start_sampler() as sampler,
                self._start_validator() or contextlib.nullcontext() as validator,
            ):
                self.validator = validator
                if self.share:
                    sampler.restore(self.share.samplers)
                    storage.load_carry_state(self.share.storage)
                    self._restore_buffer(storage)
                else:
                    storage.set_observations(0, sampler.reset())
                    storage.memory = setup.model.initial_memory(setup.num_tasks)
                logger.start_clock()
                if self.share and self._validation_missed(logger):
                    self._validate(logger)
                return self._run_stages(sampler, storage, logger, stop_after_steps)
        finally:
            self.validator = None
            for learner in self.offpolicy.values():
                learner.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            logger.close()

    def _start_validator(self) -> Validator | None:
        """The validation workers, when the pipeline asks for validation (rank 0's only)."""
        if self.setup.validation is None:
            return None
        machine, samplers = self.setup.validation
        return Validator(
            self.experiment,
            self.pipeline.validation,
            machine=machine,
            samplers=samplers,
            seed=self.seed,
        )

    def _run_stages(
        self,
        sampler: VectorSampler,
        storage: RolloutStorage,
        logger: MetricsLogger,
        stop_after_steps: int | None,
    ) -> Path | None:
        state, stages = self.state, self.pipeline.pipeline_stages
        save_interval = self.pipeline.save_interval
        stop_at = stop_after_steps or float("inf")
        while state.stage_index < len(stages) and state.total_steps < stop_at:
            stage = stages[state.stage_index]
            if state.stage_steps >= stage.max_stage_steps or state.stopped_early:
                # the stage's last window is a row of its own, not the next stage's first (if
                # not written already: a run stopped by a signal saved before writing it)
                name = self.pipeline.stage_names[state.stage_index]
                logger.maybe_emit(
                    state.total_steps, stage_index=state.stage_index, stage=name, force=True
                )
                if state.stage_index + 1 == len(stages):
                    break  # the final save keeps its steps: a larger max_stage_steps resumes it
                if state.last_save_steps != state.total_steps:
                    self._checkpoint(sampler, storage, logger)  # every stage's final model
                self.rotation.keep_newest()  # that model, never rotated away
                if (learner := self.offpolicy.pop(state.stage_index, None)) is not None:
                    learner.close()  # its prefetching thread and dataset, not needed any more
                state.stage_index, state.stage_steps = state.stage_index + 1, 0
                state.stopped_early = False
                continue
            self._rollout_and_update(sampler, storage, logger, stage)
            index, name = state.stage_index, self.pipeline.stage_names[state.stage_index]
            row = logger.maybe_emit(state.total_steps, stage_index=index, stage=name)
            stage_done = self.ranks.is_main and self._criterion_says_stop(stage, row, logger)
            interrupted, state.stopped_early = self.ranks.end_rollout(
                self.stop_signal is not None, stage_done=stage_done, model=self.setup.model
            )
            if interrupted:
                signum = self.stop_signal or signal.SIGTERM  # the signal another rank got
                raise Interrupted(signum, self._save_now(sampler, storage, logger))
            if state.stage_steps >= stage.max_stage_steps or state.stopped_early:
                # the stage's last row goes out before a checkpoint of this step can be saved,
                # so that a run resumed from that checkpoint cannot write the row again
                logger.maybe_emit(state.total_steps, stage_index=index, stage=name, force=True)
            if save_interval and state.total_steps - state.last_save_steps >= save_interval:
                self._checkpoint(sampler, storage, logger)
            elif self._validation_due():
                self._validate(logger)
        last = min(state.stage_index, len(stages) - 1)  # past the end in older checkpoints
        name = self.pipeline.stage_names[last]
        logger.maybe_emit(state.total_steps, stage_index=last, stage=name, force=True)
        return self._checkpoint(sampler, storage, logger)

    def _criterion_says_stop(
        self, stage: PipelineStage, row: dict | None, logger: MetricsLogger
    ) -> bool:
        """Ask the stage's criterion after every rollout, as AllenAct does before every one:
        with the episode metrics of the window this rollout closed, else with none."""
        if stage.early_stopping_criterion is None:
            return False
        metrics = TrainingMetrics.from_row(row or {}, logger.last_counts)
        state = self.state
        where = f"pipeline_stages[{state.stage_index}].early_stopping_criterion"
        return ask_criterion(
            where,
            stage.early_stopping_criterion,
            stage_steps=state.stage_steps,
            total_steps=state.total_steps,
            metrics=metrics,
        )

    def _validation_missed(self, logger: MetricsLogger) -> bool:
        """The checkpoint resumed from left its validation to do (every save does) and rank
        0's metrics hold no validation row of its step: the run stopped before writing it."""
        state = self.state
        validation = self.pipeline.validation is not None
        if not validation or state.last_save_steps != state.total_steps:
            return False
        if state.last_valid_steps < state.total_steps and self.ranks.from_main(
            lambda: state.total_steps in logger.validated_steps, "validation rows"
        ):
            state.last_valid_steps = state.total_steps  # written before the run stopped
        return state.last_valid_steps < state.total_steps

    def _validation_due(self) -> bool:
        interval = self.pipeline.validation and self.pipeline.validation.interval
        state = self.state
        return bool(interval) and state.total_steps - state.last_valid_steps >= interval

    def _validate(self, logger: MetricsLogger) -> None:
        """Log `valid/*` of the current model at the current step: rank 0 validates, and the
        other ranks wait for it, however long it takes."""
        state = self.state
        state.last_valid_steps = state.total_steps
        index = min(state.stage_index, len(self.pipeline.pipeline_stages) - 1)

        def validate_and_log() -> None:
            results = self.validator.run(self.setup.model)
            stage = self.pipeline.stage_names[index]
            logger.log_validation(state.total_steps, stage_index=index, stage=stage, values=results)

        with logger.paused():  # validating is not training: frames/s leaves it out
            self.ranks.wait_for_main(validate_and_log, "validation")

    def _checkpoint(
        self, sampler: VectorSampler, storage: RolloutStorage, logger: MetricsLogger
    ) -> Path | None:
        """Save, then validate the saved model (when the pipeline asks to): a validation that
        fails cannot cost the checkpoint. The checkpoint leaves that validation to do, so a run
        stopped before its row was written validates on resume (`_validation_missed`)."""
        state = self.state
        validate = self.pipeline.validation is not None
        validate = validate and state.last_valid_steps != state.total_steps
        path = self._save_now(sampler, storage, logger)
        if validate:
            self._validate(logger)
        return path
