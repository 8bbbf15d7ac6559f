"""The models MiniGridExperimentConfig builds read the mission sensor SENSORS has, whatever its
uuid, or refuse it by name: never a model silently blind to the mission."""

import pytest

from stagerl import ConfigError
from stagerl.plugins.minigrid import (
    EgocentricMiniGridSensor,
    MiniGridActorCritic,
    MiniGridExperimentConfig,
    MiniGridMissionSensor,
)

VIEW = EgocentricMiniGridSensor(view_channels=3)


def _config(model, *sensors):
    return type(
        "Config", (MiniGridExperimentConfig,), {"MODEL": model, "SENSORS": [VIEW, *sensors]}
    )


def test_the_babyai_model_refuses_a_mission_sensor_under_another_uuid():
    config = _config(MiniGridExperimentConfig.MODEL, MiniGridMissionSensor(uuid="mission"))
    with pytest.raises(ConfigError, match=r"Config.SENSORS.*'minigrid_mission'.*'mission'"):
        config.create_model()


def test_the_compact_model_reads_the_mission_sensor_under_its_uuid():
    model = _config(MiniGridActorCritic, MiniGridMissionSensor(uuid="mission")).create_model()
    assert model.mission_uuid == "mission"
    assert _config(MiniGridActorCritic).create_model().mission_uuid is None  # image only


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"mission_uuid": "mision"}, "no sensor with uuid 'mision'"), ({"film": True}, "film=True")],
)
def test_the_compact_model_names_a_mission_it_cannot_read(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        _config(MiniGridActorCritic).create_model(**kwargs)


def test_a_compact_model_subclass_without_a_mission_uuid_argument_still_builds():
    class Net(MiniGridActorCritic):
        def __init__(self, action_space, observation_space):
            super().__init__(action_space, observation_space, hidden_size=32)

    model = _config(Net, MiniGridMissionSensor()).create_model()
    assert model.mission_uuid == "minigrid_mission"
