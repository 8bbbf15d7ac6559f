"""ObjectNav on MiniWorld: find an object of the goal type and stop near it, from egocentric RGB.

AllenAct's ObjectNav, on procedurally built rooms: the six AI2-THOR actions; success is `End`
taken while an object of the target type is visible (miniworld's occlusion-aware
`get_visible_ents`) and its surface within 1.0 m of the agent's centre; reward -0.01 a step,
+10 on success, plus the decrease of the geodesic distance to the nearest target (weight 1);
metrics `success`, `spl`, `dist_to_target`, `ep_length`, `reward`. Distances are to the region
within 0.8 m of a target's surface, on a 0.2 m grid that keeps the agent clear of walls and
objects (the expert's map too).
"""

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from stagerl.errors import ConfigError
from stagerl.plugins.miniworld.scenes import AGENT_RADIUS, NavigationMap, Scene, build_scene
from stagerl.plugins.miniworld.sensors import RGBSensor
from stagerl.tasks.base import Task, TaskSampler
from stagerl.tasks.sensors import Sensor, SensorSuite

ACTIONS = ("MoveAhead", "RotateLeft", "RotateRight", "LookUp", "LookDown", "End")
MOVE_AHEAD, ROTATE_LEFT, ROTATE_RIGHT, LOOK_UP, LOOK_DOWN, END = range(len(ACTIONS))
MOVE_STEP = 0.25  # m, AI2-THOR's grid
ROTATE_DEGREES = 30
LOOK_DEGREES = 30
PITCH_RANGE = (-60, 30)  # degrees of camera pitch, negative looking down
SUCCESS_DISTANCE = 1.0  # m from the agent's centre to a target's surface
GOAL_REACH = 0.8  # m: the goal region of distances, inside the success distance
STEP_PENALTY, SUCCESS_REWARD, SHAPING_WEIGHT = -0.01, 10.0, 1.0
MIN_START_DISTANCE = 1.0  # m of geodesic distance to the goal region at the start


class ObjectNavTask(Task):
    """One episode: a scene, a target type and the agent's start pose. Picklable (for
    checkpoints) without its OpenGL world, which is rebuilt at the saved pose when needed."""

    def __init__(
        self,
        *,
        sampler: "ObjectNavTaskSampler",
        scene: Scene,
        target_type: str,
        episode_seed: int,
        sensors: SensorSuite,
        max_steps: int,
    ) -> None:
        super().__init__(env=sampler.world(), sensors=sensors, max_steps=max_steps)
        self.sampler, self.scene, self.target_type = sampler, scene, target_type
        self.episode_seed = episode_seed
        self.map = NavigationMap(scene, target_type, reach=GOAL_REACH)
        self.env.load(scene)
        self._place_agent(np.random.default_rng(episode_seed))
        # SPL's shortest path ends where success can: within SUCCESS_DISTANCE of a target (the
        # goal region above, inside it, only guides the shaping reward and the expert)
        x, _, z = self.env.agent.pos
        success_region = NavigationMap(scene, target_type, reach=SUCCESS_DISTANCE)
        self.optimal_distance = success_region.distance_from(float(x), float(z))
        self.travelled = 0.0
        self.ended = self.succeeded = False
        self.frame = self.env.render_obs()

    def _place_agent(self, rng: np.random.Generator) -> None:
        """A free start at least MIN_START_DISTANCE from the goal region, any heading."""
        candidates = np.argwhere(
            self.map.free
            & (self.map.distance >= MIN_START_DISTANCE)
            & np.isfinite(self.map.distance)
        )
        if len(candidates) == 0:
            raise ConfigError(
                f"scene {self.scene.scene_id}: no start far from a {self.target_type}"
            )
        i, j = candidates[rng.integers(len(candidates))]
        x = self.map.x[i, j] + rng.uniform(-0.05, 0.05)
        z = self.map.z[i, j] + rng.uniform(-0.05, 0.05)
        if self.scene.clearance(x, z) < AGENT_RADIUS:  # the offset moved it into a wall or object
            x, z = self.map.x[i, j], self.map.z[i, j]  # the cell's centre is clear
        self.env.agent.pos = np.array([x, 0.0, z])
        self.env.agent.dir = float(rng.uniform(-math.pi, math.pi))
        self.env.agent.cam_pitch = 0.0

    @property
    def action_space(self) -> spaces.Discrete:
        """AllenAct's six ObjectNav actions."""
        return spaces.Discrete(len(ACTIONS))

    @classmethod
    def class_action_names(cls, **kwargs: Any) -> tuple[str, ...]:
        """The AI2-THOR ObjectNav actions, in action-index order."""
        return ACTIONS

    def world(self) -> Any:
        """The OpenGL world at this task's state (rebuilt after unpickling)."""
        if self.env is None:
            pose = self._pose
            self.env = self.sampler.world()
            self.env.load(self.scene)
            agent = self.env.agent
            agent.pos, agent.dir, agent.cam_pitch = np.array(pose[:3]), pose[3], pose[4]
        return self.env

    def distance(self) -> float:
        """Geodesic distance (m) from the agent to the goal region."""
        x, _, z = self.world().agent.pos
        return self.map.distance_from(float(x), float(z))

    def target_visible(self) -> bool:
        """An object of the target type is visible and its surface within SUCCESS_DISTANCE."""
        world = self.world()
        visible = world.get_visible_ents()
        return any(
            entity in visible and self.surface_distance(entity) <= SUCCESS_DISTANCE
            for entity in world.objects_of(self.target_type)
        )

    def surface_distance(self, entity: Any) -> float:
        """Floor distance from the agent's centre to an entity's surface."""
        agent = self.world().agent
        return float(np.hypot(*(entity.pos - agent.pos)[[0, 2]]) - entity.radius)

    def _step(self, action: int) -> tuple[float, bool]:
        world = self.world()
        before = self.distance()
        if action == MOVE_AHEAD and world.move_agent(MOVE_STEP, 0.0):
            self.travelled += MOVE_STEP
        elif action in (ROTATE_LEFT, ROTATE_RIGHT):
            world.turn_agent(ROTATE_DEGREES if action == ROTATE_LEFT else -ROTATE_DEGREES)
        elif action in (LOOK_UP, LOOK_DOWN):
            pitch = world.agent.cam_pitch + (LOOK_DEGREES if action == LOOK_UP else -LOOK_DEGREES)
            world.agent.cam_pitch = float(np.clip(pitch, *PITCH_RANGE))
        elif action == END:
            self.ended, self.succeeded = True, self.target_visible()
        reward = STEP_PENALTY + SHAPING_WEIGHT * (before - self.distance())
        if self.succeeded:
            reward += SUCCESS_REWARD
        if not self.ended:
            self.frame = world.render_obs()
        return reward, self.ended

    def reached_terminal_state(self) -> bool:
        """True once End was taken (successful or not)."""
        return self.ended

    def metrics(self) -> dict[str, float]:
        """AllenAct's ObjectNav metrics: `success`, `spl`, `dist_to_target` and the base ones."""
        success = float(self.succeeded)
        spl = success * self.optimal_distance / max(self.optimal_distance, self.travelled, 1e-9)
        return {
            **super().metrics(),
            "success": success,
            "spl": spl,
            "dist_to_target": self.distance(),
        }

    def query_expert(self) -> tuple[int, bool]:
        """The shortest-path expert's action (`expert.py`); always valid."""
        from stagerl.plugins.miniworld.expert import expert_action

        return expert_action(self), True

    def resume_expert(self) -> None:
        """Forget where the expert last saw a target and any detour it was on."""
        self.__dict__.pop("target_seen_at", None)
        self.__dict__.pop("detour_until", None)

    def render(self) -> np.ndarray:
        """The agent's view."""
        return self.frame

    def caption(self) -> str:
        """The goal, e.g. "find a ball"."""
        return f"find a {self.target_type}"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("expert_map", None)  # the expert's, derived from the scene: rebuilt when asked
        world = state.pop("env")
        if world is not None:
            agent = world.agent
            state["_pose"] = (*map(float, agent.pos), float(agent.dir), float(agent.cam_pitch))
        state["env"] = None
        return state

    def __repr__(self) -> str:
        return (
            f"ObjectNavTask(scene {self.scene.scene_id}, {self.target_type}, "
            f"seed={self.episode_seed}, step={self.num_steps_taken})"
        )


class ObjectNavTaskSampler(TaskSampler):
    """ObjectNav episodes over a list of scene ids.

    Training (`deterministic=False`): endless episodes in the current scene, a random target
    type and start each; `next_scene()` moves to the next scene of the list (the pipeline's
    `advance_scene_rollout_period`). Evaluation (`deterministic=True`): episode g of the split
    (g = slot + k x num_slots for this sampler's k-th) is in scene `scenes[g % len(scenes)]`
    with episode seed g, whatever the number of samplers; `max_tasks` ends the sampler.
    """

    def __init__(
        self,
        *,
        scenes: Sequence[int],
        sensors: Sequence[Sensor],
        max_steps: int = 100,
        seed: int = 0,
        deterministic: bool = False,
        slot: int = 0,
        num_slots: int = 1,
        max_tasks: int | None = None,
    ) -> None:
        if not scenes:
            raise ConfigError("ObjectNavTaskSampler.scenes is empty: give at least one scene id")
        self.scenes = list(scenes)
        self.sensor_suite = SensorSuite(sensors)
        rgb = self.sensor_suite.sensors.get("rgb")
        if rgb is None:
            raise ConfigError("SENSORS has no RGBSensor (uuid 'rgb'): ObjectNav renders for it")
        cameras = [s.uuid for s in self.sensor_suite.sensors.values() if isinstance(s, RGBSensor)]
        if len(cameras) > 1:  # the world renders at one size, the 'rgb' sensor's
            raise ConfigError(f"SENSORS has {len(cameras)} RGBSensors ({cameras}); give one")
        self.resolution = rgb.observation_space.shape[:2]  # (height, width)
        self.max_steps, self.deterministic = max_steps, deterministic
        self.slot, self.num_slots, self.max_tasks = slot, num_slots, max_tasks
        self.scene_index = 0
        self.num_sampled = 0
        self._world: Any = None
        self.set_seed(seed)

    @property
    def observation_space(self) -> spaces.Dict:
        """The sensor suite's space."""
        return self.sensor_suite.observation_space

    @property
    def action_space(self) -> spaces.Discrete:
        """AllenAct's six ObjectNav actions."""
        return spaces.Discrete(len(ACTIONS))

    @property
    def length(self) -> float:
        """Episodes left: endless in training, `max_tasks` less those given otherwise."""
        return float("inf") if self.max_tasks is None else self.max_tasks - self.num_sampled

    def world(self) -> Any:
        """This sampler's OpenGL world, made on first use (in the worker process)."""
        if self._world is None:
            from stagerl.plugins.miniworld.world import ObjectNavWorld

            height, width = self.resolution
            self._world = ObjectNavWorld(obs_width=width, obs_height=height)
        return self._world

    @property
    def scene(self) -> Scene:
        """The scene training episodes are in now."""
        return build_scene(self.scenes[self.scene_index])

    def next_task(self) -> ObjectNavTask | None:
        """A random episode in the current scene (training), or the next of the fixed sequence."""
        if self.length <= 0:
            return None
        if self.deterministic:
            episode = self.slot + self.num_sampled * self.num_slots
            scene, seed = build_scene(self.scenes[episode % len(self.scenes)]), episode
        else:
            scene, seed = self.scene, int(self.rng.integers(2**31 - 1))
        self.num_sampled += 1
        target = scene.types[int(np.random.default_rng([seed, 1]).integers(len(scene.types)))]
        return ObjectNavTask(
            sampler=self,
            scene=scene,
            target_type=target,
            episode_seed=seed,
            sensors=self.sensor_suite,
            max_steps=self.max_steps,
        )

    def set_seed(self, seed: int) -> None:
        """Seed the episode draws."""
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Start the sequence of episodes over."""
        self.num_sampled = 0
        self.rng = np.random.default_rng(self.seed)

    def next_scene(self) -> None:
        """Move to this sampler's next training scene."""
        self.scene_index = (self.scene_index + 1) % len(self.scenes)

    def close(self) -> None:
        """Close the OpenGL world."""
        if self._world is not None:
            self._world.close()
            self._world = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_world": None}

    def __repr__(self) -> str:
        return f"ObjectNavTaskSampler(scene {self.scenes[self.scene_index]}, slot {self.slot})"


__all__ = ["ACTIONS", "ObjectNavTask", "ObjectNavTaskSampler"]
