"""MachineParams takes AllenAct's forms and names the field of a bad one; the cores it counts
are the CPU affinity's, within a container's CPU quota."""

import pytest
import torch

from stagerl import ConfigError, MachineParams
from stagerl.cores import cpu_quota


@pytest.fixture(autouse=True)
def no_cpu_quota(monkeypatch):
    """The cores come from the patched CPU affinity, whatever quota the host's cgroup has."""
    monkeypatch.setattr("stagerl.cores.cpu_quota", lambda: None)


@pytest.mark.parametrize(
    ("kwargs", "device"),
    [
        ({}, "cpu"),
        ({"devices": []}, "cpu"),
        ({"devices": [-1]}, "cpu"),
        ({"devices": [1]}, "cuda:1"),
        ({"devices": torch.device("cuda", 0)}, "cuda:0"),
        ({"gpu_ids": [0]}, "cuda:0"),
        ({"devices": ["cuda"], "nprocesses": [8]}, "cuda"),
    ],
)
def test_allenact_device_forms(kwargs, device):
    machine = MachineParams(**{"nprocesses": 8, **kwargs})
    assert machine.device == device and machine.nprocesses == 8
    assert machine.task_sampler_devices == machine.trainer_devices  # sampler_devices defaults


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"nprocesses": [8, -1]}, "MachineParams.nprocesses"),
        ({"nprocesses": -1}, "MachineParams.nprocesses=-1"),
        ({"nprocesses": 8, "devices": [0], "gpu_ids": [0]}, "not both"),
        ({"nprocesses": 8, "visualizer": object()}, "MachineParams.visualizer"),
        ({"nprocesses": 8, "max_sampler_processes": 0}, "MachineParams.max_sampler_processes=0"),
        ({"nprocesses": 8, "update_threads": 2.0}, "MachineParams.update_threads=2.0"),
        ({"nprocesses": 8, "worker_timeout": float("inf")}, "MachineParams.worker_timeout=inf"),
        ({"nprocesses": 8, "rank_timeout": 3e6}, "MachineParams.rank_timeout=3000000.0"),
        ({"nprocesses": 8, "double_buffered": "no"}, "MachineParams.double_buffered='no'"),
    ],
)
def test_bad_machine_params_name_the_field(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        MachineParams(**kwargs)


def test_samplers_are_packed_into_at_most_one_process_per_core_or_the_cap(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert MachineParams(nprocesses=16).sampler_processes() == 2
    assert MachineParams(nprocesses=16).sampler_processes(spare_core=True) == 1
    assert MachineParams(nprocesses=1).sampler_processes() == 1
    assert MachineParams(nprocesses=16, max_sampler_processes=5).sampler_processes() == 5
    assert MachineParams(nprocesses=16, max_sampler_processes=2).sampler_processes(True) == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert MachineParams(nprocesses=16).sampler_processes(spare_core=True) == 1


def test_each_rank_gets_its_share_of_samplers_devices_and_cores(monkeypatch):
    split = [MachineParams(nprocesses=8).for_rank(r, 3) for r in range(3)]
    assert [(m.nprocesses, first) for m, first in split] == [(3, 0), (3, 3), (2, 6)]
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    mine, first = MachineParams(nprocesses=[8, 6], devices=[0, 1]).for_rank(1, 2)
    assert (mine.nprocesses, mine.device, first) == (6, "cuda:1", 8)
    assert MachineParams(nprocesses=4, devices="cuda").device == "cuda:1"
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert MachineParams(nprocesses=16).sampler_processes(spare_core=True) == 1
    assert MachineParams(nprocesses=16, update_threads=4).threads_for_updates() == 2
    monkeypatch.setattr("stagerl.cores.cpu_quota", lambda: 2.5)  # 2 whole CPUs of the 4
    assert MachineParams.cores() == 1


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_a_containers_cpu_quota_is_read_from_its_cgroup(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == quota


@pytest.mark.parametrize(("quota", "cores"), [(None, 4), (8.0, 4), (2.5, 2), (1.5, 1), (0.5, 1)])
def test_the_usable_cores_are_the_affinitys_within_the_quotas_whole_cpus(monkeypatch, quota, cores):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr("stagerl.cores.cpu_quota", lambda: quota)
    assert MachineParams.cores() == cores


@pytest.mark.parametrize(
    ("kwargs", "world_size", "named"),
    [
        ({"nprocesses": [8, 8]}, 3, "nprocesses=\\[8, 8\\] gives samplers for 2"),
        ({"nprocesses": 1}, 2, "leaves rank 1 of 2 no task sampler"),
        ({"nprocesses": 8, "devices": [0, 1]}, 1, "MachineParams.devices names 2 devices"),
    ],
)
def test_a_share_that_cannot_be_given_names_the_field(kwargs, world_size, named):
    with pytest.raises(ConfigError, match=named):
        MachineParams(**kwargs).for_rank(world_size - 1, world_size)


def test_a_changed_copy_keeps_the_per_rank_sampler_counts():
    # `stagerl train -m K` changes max_sampler_processes; the list form must survive it
    machine = MachineParams(nprocesses=[1, 3]).changed(max_sampler_processes=1)
    shares = [machine.for_rank(r, 2) for r in range(2)]
    assert [(m.nprocesses, first) for m, first in shares] == [(1, 0), (3, 1)]
    assert machine.max_sampler_processes == 1 and machine.nprocesses == 4
