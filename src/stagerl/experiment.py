"""ExperimentConfig (what a user writes) and loading an experiment file (MachineParams, which it
returns from `machine_params`, lives in stagerl.machine and is importable from here too)."""

import difflib
import hashlib
import importlib.util
import inspect
import os
import pickle
import re
import sys
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

from stagerl.errors import ConfigError, user_call
from stagerl.machine import MachineParams  # also imported from here by configs
from stagerl.tasks.worker import EXPERIMENT_MODULE_PREFIX, WorkerExperiment


class ExperimentConfig(ABC):
    """An experiment: subclass it once per file. Methods may be classmethods (the seed's style)
    or instance methods (AllenAct's): stagerl creates one instance and calls them on it."""

    @abstractmethod
    def tag(self) -> str:
        """A name for the run directory."""

    @abstractmethod
    def training_pipeline(self, **kwargs: Any) -> Any:
        """The TrainingPipeline: losses, stages, optimizer and the settings shared by stages."""

    @abstractmethod
    def create_model(self, **kwargs: Any) -> Any:
        """The ActorCriticModel, built for the tasks' action and observation spaces."""

    @abstractmethod
    def make_sampler_fn(self, **kwargs: Any) -> Any:
        """Build one TaskSampler from the `*_task_sampler_args` of its slot."""

    @abstractmethod
    def machine_params(self, mode: str = "train", **kwargs: Any) -> "MachineParams | dict":
        """MachineParams (or AllenAct's dict form) for mode 'train', 'valid' or 'test'."""

    @abstractmethod
    def train_task_sampler_args(
        self,
        process_ind: int,
        total_processes: int,
        devices: list[str] | None = None,
        seeds: list[int] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Keyword arguments of `make_sampler_fn` for training sampler `process_ind`."""

    def valid_task_sampler_args(
        self,
        process_ind: int,
        total_processes: int,
        devices: list[str] | None = None,
        seeds: list[int] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Like `train_task_sampler_args`, for validation samplers."""
        raise NotImplementedError(
            f"{type(self).__name__} defines no validation tasks: define valid_task_sampler_args "
            "or set TrainingPipeline.validation=None"
        )

    def test_task_sampler_args(
        self,
        process_ind: int,
        total_processes: int,
        devices: list[str] | None = None,
        seeds: list[int] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Like `train_task_sampler_args`, for test samplers."""
        raise NotImplementedError(f"{type(self).__name__} defines no test tasks")


class SplitSamplerArgs:
    """`train_`, `valid_` and `test_task_sampler_args` as one `_sampler_args(split,
    process_ind, total_processes, seeds)`, for experiment base classes whose splits differ
    only in data (a plugin's config mixes it in before ExperimentConfig)."""

    @classmethod
    def _sampler_args(
        cls, split: str, process_ind: int, total_processes: int, seeds: list[int] | None
    ) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def train_task_sampler_args(
        cls,
        process_ind: int,
        total_processes: int,
        devices: list[str] | None = None,
        seeds: list[int] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Training sampler `process_ind`'s arguments."""
        return cls._sampler_args("train", process_ind, total_processes, seeds)

    @classmethod
    def valid_task_sampler_args(
        cls,
        process_ind: int,
        total_processes: int,
        devices: list[str] | None = None,
        seeds: list[int] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Validation sampler `process_ind`'s arguments."""
        return cls._sampler_args("valid", process_ind, total_processes, seeds)

    @classmethod
    def test_task_sampler_args(
        cls,
        process_ind: int,
        total_processes: int,
        devices: list[str] | None = None,
        seeds: list[int] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Test sampler `process_ind`'s arguments."""
        return cls._sampler_args("test", process_ind, total_processes, seeds)


@dataclass(frozen=True)
class LoadedExperiment:
    """An experiment class with where it came from (module name and path for the workers) and
    the gymnasium environments its file registered (workers register them too)."""

    config: type[ExperimentConfig]
    module_name: str
    path: Path
    source: str  # the file's text
    loaded_sources: str = ""  # that of every experiment file it loaded, each after a header
    registered_envs: tuple[Any, ...] = ()

    @property
    def full_source(self) -> str:
        """Its text and that of every experiment file it loaded: what resuming compares."""
        return self.source + self.loaded_sources

    @property
    def name(self) -> str:
        """The experiment class's name (checkpoints record it)."""
        return self.config.__name__

    @cached_property
    def instance(self) -> ExperimentConfig:
        """The one instance of the config class that every method is called on."""
        return user_call(f"{self.name}()", self.config)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`config.method(...)` on the instance; an exception names the method and the error."""
        return user_call(f"{self.name}.{method}()", getattr(self.instance, method), *args, **kwargs)

    def tag(self) -> str:
        """`config.tag()`, which names the run's folder under the output directory: one
        non-empty folder name, else a ConfigError."""
        tag = self.call("tag")
        if not isinstance(tag, str) or tag.strip() in ("", ".", "..") or re.search(r"[/\\\0]", tag):
            raise ConfigError(
                f"{self.name}.tag() returned {tag!r}: expected a name for the run's folder "
                "(a non-empty string without '/')"
            )
        return tag

    def machine_params(self, mode: str) -> MachineParams:
        """`machine_params(mode)` as MachineParams, AllenAct's dict form included."""
        value = self.call("machine_params", mode)
        return MachineParams.instance_from(value, f"{self.name}.machine_params({mode!r})")


# For each load_experiment in progress (innermost last): the experiments its file loaded in turn
_loading: list[list[LoadedExperiment]] = []


def _misspelt_setting(config: type[ExperimentConfig]) -> None:
    """A ConfigError for an UPPER_CASE class attribute of the user's that is nearly the name of
    a setting of stagerl's base class (NUM_TRAIN_SAMPLER for NUM_TRAIN_SAMPLERS): that setting
    would keep its default unnoticed."""
    ours = [cls for cls in config.__mro__ if cls.__module__.startswith("stagerl.")]
    settings = {name for cls in ours for name in vars(cls) if name.isupper()}
    theirs = {name for cls in config.__mro__[: config.__mro__.index(ours[0])] for name in vars(cls)}
    for name in sorted(name for name in theirs - settings if name.isupper()):
        close = difflib.get_close_matches(name, settings, n=1, cutoff=0.9)
        if close:
            raise ConfigError(
                f"{config.__name__}.{name} is not a setting of {ours[0].__name__}: did you mean "
                f"{close[0]}? (rename it if it is a constant of your own)"
            )


def _package_of(path: Path) -> str | None:
    """The dotted package of a file under the working directory (`projects.babyai`), as
    AllenAct imports experiments; else None."""
    try:
        parts = path.parent.relative_to(Path.cwd().resolve()).parts
    except ValueError:
        return None
    return ".".join(parts) if parts and all(part.isidentifier() for part in parts) else None


def _module_name(path: Path) -> str:
    """The module an experiment file loads as, named after its path; inside its package
    where it has one, so that its relative imports work (in the workers too)."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    name = f"{EXPERIMENT_MODULE_PREFIX}{path.stem}_{digest}"
    package = _package_of(path)
    return f"{package}.{name}" if package else name


def _import_file(path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        del sys.modules[module_name]
        raise ConfigError(
            f"{path}:{error.lineno}: syntax error: {error.msg}\n    {(error.text or '').rstrip()}"
        ) from None
    except Exception as error:
        del sys.modules[module_name]
        frame = traceback.extract_tb(error.__traceback__)[-1]
        raise ConfigError(
            f"{path}: importing it raised {type(error).__name__}: {error}\n"
            f"    at {frame.filename}:{frame.lineno}"
        ) from None
    return module


def load_experiment(path: str | Path) -> LoadedExperiment:
    """Import an experiment file and return its single ExperimentConfig subclass.

    The working directory is put on `sys.path` first (as `python -m` does), so that an
    experiment can import the project's other modules, as AllenAct's `projects.*` files do.
    """
    import gymnasium  # the registry, to see which environments the file registers

    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"{path}: experiment file not found")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    source = path.read_text()
    module_name = _module_name(path)
    known = set(gymnasium.registry)
    _loading.append([])
    try:
        module = _import_file(path, module_name)
    finally:
        loaded = _loading.pop()
    registered = tuple(spec for env_id, spec in gymnasium.registry.items() if env_id not in known)
    defined = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, ExperimentConfig)
        and value.__module__ == module_name
    ]
    found = [config for config in defined if not inspect.isabstract(config)]
    if len(found) != 1:
        names = [cls.__name__ for cls in found]
        missing = [
            f"{config.__name__} lacks {', '.join(sorted(config.__abstractmethods__))}"
            for config in defined
            if inspect.isabstract(config)
        ]
        raise ConfigError(
            f"{path}: expected exactly one concrete ExperimentConfig subclass, "
            f"found {names or 'none'}" + "".join(f"; {line}" for line in missing)
        )
    _misspelt_setting(found[0])
    loaded_sources = "".join(  # named relative to this file: a project moved whole is unchanged
        f"\n# ---- {os.path.relpath(inner.path, path.parent)}, loaded above ----\n"
        + inner.full_source
        for inner in loaded
    )
    experiment = LoadedExperiment(
        config=found[0],
        module_name=module_name,
        path=path,
        source=source,
        loaded_sources=loaded_sources,
        registered_envs=registered,
    )
    if _loading:
        _loading[-1].append(experiment)
    return experiment


def worker_experiment(experiment: LoadedExperiment) -> WorkerExperiment:
    """What sampler workers need of the experiment (see `WorkerExperiment`)."""
    return WorkerExperiment(
        experiment.module_name, str(experiment.path), pickle.dumps(experiment.registered_envs)
    )
