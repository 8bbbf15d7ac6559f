"""Expert datasets in Minari's format (HDF5): written atomically, read into flat arrays.

A dataset is a directory `DIR` holding `DIR/data/main_data.hdf5` and `DIR/data/metadata.json`,
the layout `minari.load_dataset` expects under `MINARI_DATASETS_PATH`; `minari.MinariDataset(
DIR / "data")` opens it anywhere. This module imports neither torch nor the environments.
"""

import contextlib
import ctypes
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stagerl.errors import StagerlError

DATA_DIR = "data"
HDF5_FILE = "main_data.hdf5"
METADATA_FILE = "metadata.json"
# What minari accepts as a dataset id: (namespace/)name-v<version>.
_DATASET_ID = re.compile(r"^(?:[-_\w][-_\w/]*[-_\w]+/)?[-_\w]+?-v\d+$")


class DatasetError(StagerlError):
    """A dataset file is missing, unreadable, or does not fit the experiment; names the file."""


@dataclass
class EpisodeArrays:
    """Episodes laid end to end: step i of episode e is row `starts[e] + i` of every array.

    `observations` holds the observation each action was taken in (a Minari episode's final
    observation, which no action follows, is dropped).
    """

    observations: dict[str, np.ndarray]
    actions: np.ndarray  # [steps] int64
    starts: np.ndarray  # [episodes] int64
    lengths: np.ndarray  # [episodes] int64
    source: Path

    @property
    def num_episodes(self) -> int:
        """How many episodes the arrays hold."""
        return len(self.lengths)


def _umask() -> int:
    """This process's umask, from /proc where Linux shows it; elsewhere by setting it and
    setting it back (a moment in which another thread's new file would get mode 0o666)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def dataset_id_for(out: Path) -> str:
    """The directory's name when minari accepts it as an id (e.g. `gotoobj-v0`), else the name
    with `-v0` added; naming the directory `NAME-vN` makes `minari.load_dataset` find it."""
    name = re.sub(r"[^-_\w]", "_", out.name)
    return name if _DATASET_ID.match(name) else f"{name}-v0"


def write_dataset(
    out: Path,
    episode_chunks: Iterable[list[Any]],
    *,
    observation_space: Any,
    action_space: Any,
    env_spec: Any,
    metadata: Callable[[], dict[str, Any]],
) -> Path:
    """Write Minari episode buffers (chunk by chunk, in order) to the dataset directory `out`.

    Everything goes to a folder `.<name>.incomplete-*` of its own beside `out` and is renamed to
    `out` once complete, so an interrupted run leaves nothing that looks like a dataset, and two
    recordings never write into one folder. An existing `out` is never overwritten.
    `metadata()` is called once every episode is written, so it can describe them.
    """
    import minari
    from minari.dataset.minari_storage import MinariStorage

    out = Path(out).absolute()  # minari doubles a relative storage path when sizing the file
    if out.exists():
        raise DatasetError(f"{out} already exists; choose another --out or delete it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.incomplete-", dir=out.parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would hide it from other users
    except OSError as error:
        raise DatasetError(f"{out}: cannot write a dataset there ({error})") from None
    try:
        storage = MinariStorage.new(
            staging / DATA_DIR,
            observation_space=observation_space,
            action_space=action_space,
            env_spec=env_spec,
            data_format="hdf5",
            jpeg_encoding=False,  # JPEG is lossy on uint8 grids
        )
        for chunk in episode_chunks:
            storage.update_episodes(chunk)
        storage.update_metadata(
            {"dataset_id": dataset_id_for(out), "minari_version": minari.__version__, **metadata()}
        )
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def read_metadata(path: Path) -> dict[str, Any]:
    """The dataset's metadata; a DatasetError naming the file if it is missing or broken."""
    path = Path(path)
    data_dir = path / DATA_DIR if (path / DATA_DIR).is_dir() else path
    metadata_file = data_dir / METADATA_FILE
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset (record one with `stagerl record-dataset`)")
    if not metadata_file.is_file() or not (data_dir / HDF5_FILE).is_file():
        raise DatasetError(
            f"{path}: not a Minari dataset (expected {DATA_DIR}/{METADATA_FILE} and "
            f"{DATA_DIR}/{HDF5_FILE}); an interrupted recording leaves only a .incomplete folder"
        )
    try:
        metadata = json.loads(metadata_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{metadata_file}: unreadable metadata ({error})") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("total_episodes"), int):
        raise DatasetError(f"{metadata_file}: not Minari metadata (no total_episodes count)")
    return {**metadata, "hdf5_path": data_dir / HDF5_FILE}


def _check_episodes(file: Any, hdf5_path: Path, episodes: int) -> None:
    """Every episode the metadata promises is in the file (a check of names: opening a group
    costs memory, so only the episodes read are opened)."""
    names = [f"episode_{index}" for index in range(episodes)]
    missing = [name for name in names if name not in file]
    if missing:
        raise DatasetError(
            f"{hdf5_path}: the metadata promises {episodes} episodes but {len(missing)} are "
            f"missing (first: {missing[0]}); the file is truncated or was not written by minari"
        )


@contextlib.contextmanager
def _hdf5_file(path: Path) -> Iterator[tuple[Any, Path, int]]:
    """The dataset's HDF5 file open for reading, its path and its episode count; any error
    reading it becomes a DatasetError naming the file."""
    import h5py

    metadata = read_metadata(path)
    hdf5_path: Path = metadata["hdf5_path"]
    try:
        with h5py.File(hdf5_path, "r") as file:
            yield file, hdf5_path, int(metadata["total_episodes"])
    except DatasetError:
        raise
    # h5py raises RuntimeError for some damaged metadata; a group of the wrong shape, the others
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError) as error:
        raise DatasetError(f"{hdf5_path}: corrupt or unreadable ({error})") from None


def leading_episodes(path: Path, max_steps: int) -> int:
    """How many of the first recorded episodes begin before step `max_steps` of the dataset
    (AllenAct's `restrict_max_steps_in_dataset`: the last may end past it); reads no further."""
    with _hdf5_file(path) as (file, _, total):
        steps = 0
        for index in range(total):
            if steps >= max_steps:
                return index
            steps += file[f"episode_{index}"]["actions"].shape[0]
        return total


def read_episodes(
    path: Path, *, observation_keys: list[str], episode_indices: np.ndarray, num_actions: int
) -> EpisodeArrays:
    """Read the given episodes' observations (these keys) and actions into flat arrays; an
    action outside `[0, num_actions)` is a DatasetError naming the file and the episode."""
    observations: dict[str, list[np.ndarray]] = {key: [] for key in observation_keys}
    actions, lengths = [], []
    with _hdf5_file(path) as (file, hdf5_path, total):
        _check_episodes(file, hdf5_path, total)
        for index in episode_indices:
            group = file[f"episode_{index}"]
            episode_actions = group["actions"][()]
            outside = (episode_actions < 0) | (episode_actions >= num_actions)
            if outside.any():
                step = int(outside.argmax())
                raise DatasetError(
                    f"{hdf5_path}: episode_{index} step {step} has action "
                    f"{episode_actions[step]}, not one of the tasks' {num_actions} (0 to "
                    f"{num_actions - 1})"
                )
            for key in observation_keys:
                recorded = group["observations"][key]
                if len(recorded) < len(episode_actions):  # minari keeps one more than actions
                    raise DatasetError(
                        f"{hdf5_path}: episode_{index} has {len(episode_actions)} actions but "
                        f"only {len(recorded)} {key!r} observations"
                    )
                observations[key].append(recorded[: len(episode_actions)])
            actions.append(episode_actions)
            lengths.append(len(episode_actions))
    lengths_array = np.asarray(lengths, dtype=np.int64)
    if len(lengths_array) and lengths_array.min() < 1:
        raise DatasetError(f"{hdf5_path}: an episode has no steps")
    try:
        joined = {key: np.concatenate(parts) for key, parts in observations.items()}
    except ValueError as error:  # episodes whose observations differ in shape
        raise DatasetError(f"{hdf5_path}: its episodes' observations differ ({error})") from None
    episodes = EpisodeArrays(
        observations=joined,
        actions=np.concatenate(actions).astype(np.int64),
        starts=np.concatenate([[0], np.cumsum(lengths_array)[:-1]]).astype(np.int64),
        lengths=lengths_array,
        source=hdf5_path,
    )
    observations.clear()
    actions.clear()
    _return_freed_memory()
    return episodes


def _return_freed_memory() -> None:
    """Hand the memory the reading freed back to the OS, which glibc would keep: 20,000
    GoToLocal episodes (20 MB of arrays) left 231 MB more in use, 58 MB after this. Elsewhere
    than glibc, nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
