"""The MiniWorld environment of an ObjectNav scene. Imported only where tasks run (the sampler
workers): it opens an OpenGL context. pyglet renders headless through EGL only if told so
before miniworld is first imported, which this module does first."""

import contextlib
import io
import math
from typing import Any

import numpy as np
import pyglet

pyglet.options["headless"] = True

from miniworld.entity import Ball, Box, Entity, Key, MeshEnt  # noqa: E402
from miniworld.miniworld import MiniWorldEnv  # noqa: E402

from stagerl.plugins.miniworld.scenes import (  # noqa: E402
    OBJECT_TYPES,
    SCENE_RANGES,
    Scene,
    build_scene,
)

# A small robot's camera, low and wide as in AI2-THOR's ObjectNav: from miniworld's 1.5 m and
# 60 degrees, an object within reach lies below the view (and only looking down finds it).
CAMERA_HEIGHT = 0.9  # m
FIELD_OF_VIEW = 75  # degrees, vertical (about 90 across an 80x60 frame)


def _entity(type_name: str) -> Entity:
    kind, colour, _ = OBJECT_TYPES[type_name]
    if kind == "box":
        entity = Box(color=colour, size=0.8)
    elif kind == "ball":
        entity = Ball(color=colour, size=0.8)
    elif kind == "key":
        entity = Key(color=colour)
    else:
        entity = MeshEnt(mesh_name=kind, height=0.8, static=True)
    entity.object_type = type_name
    return entity


# miniworld compiles every world's static part (light, room, static objects) into OpenGL
# display list 1, and the contexts of one process share their lists: with two worlds in a
# process, each drew the room loaded last. Which world's room the list holds now, so that a
# world recompiles its own first.
_ROOM_IN_LIST: list[object | None] = [None]


class ObjectNavWorld(MiniWorldEnv):
    """One room of a `Scene` with its objects; the task moves the agent and its camera.
    Several can live in one process (a worker's task slots): each draws its own room."""

    def __init__(self, obs_width: int, obs_height: int) -> None:
        self.room_token = object()  # this world's mark in _ROOM_IN_LIST
        self.scene = build_scene(SCENE_RANGES["train"][0])
        with contextlib.redirect_stdout(io.StringIO()):  # "Falling back to num_samples=4"
            super().__init__(max_episode_steps=math.inf, obs_width=obs_width, obs_height=obs_height)

    def load(self, scene: Scene) -> None:
        """Build `scene`'s room and objects (the agent is placed by the task)."""
        self.scene = scene
        self.reset(seed=scene.scene_id % 2**31)
        # after reset, which sets the agent's camera from miniworld's defaults
        self.agent.cam_height, self.agent.cam_fov_y = CAMERA_HEIGHT, FIELD_OF_VIEW

    def _gen_world(self) -> None:
        scene = self.scene
        self.add_rect_room(
            min_x=0,
            max_x=scene.width,
            min_z=0,
            max_z=scene.depth,
            wall_tex="brick_wall",
            floor_tex="asphalt",
            no_ceiling=True,
        )
        for index, obj in enumerate(scene.objects):
            position = np.array([obj.x, 0.0, obj.z])
            self.place_entity(_entity(obj.type), pos=position, dir=index * 1.3)
        self.place_agent(pos=np.array([scene.width / 2, 0.0, scene.depth / 2]), dir=0.0)

    def objects_of(self, type_name: str) -> list[Entity]:
        """The entities of an object type."""
        return [e for e in self.entities if getattr(e, "object_type", None) == type_name]

    def _render_static(self) -> None:
        """Compile this world's room into the shared display list, and say so."""
        super()._render_static()
        _ROOM_IN_LIST[0] = self.room_token

    def _render_world(self, frame_buffer: Any, render_agent: bool) -> np.ndarray:
        """Draw the world, its own room first compiled again if another world's is there."""
        if _ROOM_IN_LIST[0] is not self.room_token:
            self._render_static()
        return super()._render_world(frame_buffer, render_agent)
