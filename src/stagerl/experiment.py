"""ExperimentConfig (what a user writes), MachineParams, and loading an experiment file."""

import hashlib
import importlib.util
import inspect
import sys
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from stagerl.errors import ConfigError, require


@dataclass(frozen=True)
class MachineParams:
    """How many worker processes step how many tasks each, and how long a step may take.

    The trainer acts with one torch thread, since the workers need the other cores then
    (oversubscribed torch threads spin and run many times slower); it updates the model with
    `update_threads`, since the workers are idle then.
    """

    num_workers: int = 2
    tasks_per_worker: int = 8
    device: str = "cpu"
    worker_timeout: float = 60.0
    update_threads: int = 2

    def __post_init__(self) -> None:
        require(self.num_workers >= 1, "MachineParams.num_workers", self.num_workers, ">= 1")
        require(
            self.tasks_per_worker >= 1,
            "MachineParams.tasks_per_worker",
            self.tasks_per_worker,
            ">= 1",
        )
        require(self.worker_timeout > 0, "MachineParams.worker_timeout", self.worker_timeout, "> 0")
        require(
            self.update_threads >= 1, "MachineParams.update_threads", self.update_threads, ">= 1"
        )

    @property
    def num_tasks(self) -> int:
        return self.num_workers * self.tasks_per_worker


class ExperimentConfig(ABC):
    """An experiment: subclass it once per file and fill in the classmethods (see the seed)."""

    @classmethod
    @abstractmethod
    def tag(cls) -> str:
        """A name for the run directory."""

    @classmethod
    @abstractmethod
    def training_pipeline(cls, **kwargs: Any) -> Any: ...

    @classmethod
    @abstractmethod
    def create_model(cls, **kwargs: Any) -> Any: ...

    @classmethod
    @abstractmethod
    def make_sampler_fn(cls, **kwargs: Any) -> Any:
        """Build one TaskSampler from the `*_task_sampler_args` of its slot."""

    @classmethod
    @abstractmethod
    def machine_params(cls, mode: str = "train", **kwargs: Any) -> MachineParams: ...

    @classmethod
    @abstractmethod
    def train_task_sampler_args(
        cls,
        process_ind: int,
        total_processes: int,
        devices: list[str] | None = None,
        seeds: list[int] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]: ...

    @classmethod
    def valid_task_sampler_args(
        cls,
        process_ind: int,
        total_processes: int,
        devices: list[str] | None = None,
        seeds: list[int] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        raise NotImplementedError(f"{cls.__name__} defines no validation tasks")

    @classmethod
    def test_task_sampler_args(
        cls,
        process_ind: int,
        total_processes: int,
        devices: list[str] | None = None,
        seeds: list[int] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        raise NotImplementedError(f"{cls.__name__} defines no test tasks")


@dataclass(frozen=True)
class LoadedExperiment:
    """An experiment class with where it came from (module name and path for the workers)."""

    config: type[ExperimentConfig]
    module_name: str
    path: Path
    source: str


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
    """Import an experiment file and return its single ExperimentConfig subclass."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"{path}: experiment file not found")
    source = path.read_text()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    module_name = f"stagerl_experiment_{path.stem}_{digest}"
    module = _import_file(path, module_name)
    found = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, ExperimentConfig)
        and value.__module__ == module_name
        and not inspect.isabstract(value)
    ]
    if len(found) != 1:
        names = [cls.__name__ for cls in found]
        raise ConfigError(
            f"{path}: expected exactly one concrete ExperimentConfig subclass, found {names or 'none'}"
        )
    return LoadedExperiment(config=found[0], module_name=module_name, path=path, source=source)
