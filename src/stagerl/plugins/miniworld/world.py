"""The MiniWorld environment of an ObjectNav scene. Imported only where tasks run (the sampler
workers): it opens an OpenGL context. pyglet renders headless through EGL only if told so
before miniworld is first imported, which this module does first."""

import contextlib
import ctypes
import io
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyglet

pyglet.options["headless"] = True

try:  # pyglet opens its first OpenGL context when miniworld imports pyglet.gl
    from miniworld import miniworld as _miniworld
    from miniworld.entity import Ball, Box, Entity, Key, MeshEnt
    from miniworld.miniworld import MiniWorldEnv
    from pyglet import gl
except Exception as error:  # no libEGL (ImportError), or no driver or device for it
    no_config = type(error).__name__ == "NoSuchConfigException"
    if not (no_config or (isinstance(error, ImportError) and "EGL" in str(error))):
        raise
    raise RuntimeError(
        f"MiniWorld cannot open an OpenGL context through EGL ({error}): on Debian/Ubuntu, "
        "apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libglu1-mesa"
    ) from None

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
# process, each drew the room loaded last. Each world has a list of its own instead, which
# miniworld's list calls are pointed at while the world compiles or draws (recompiling list 1
# before each draw made a draw 1.7x as slow).
_LIST_CALLS = ("glDeleteLists", "glNewList", "glCallList")


@contextlib.contextmanager
def _display_list(number: int) -> Iterator[None]:
    """miniworld's calls on its display list 1 go to list `number` meanwhile."""
    saved = {name: getattr(_miniworld, name) for name in _LIST_CALLS}
    _miniworld.glDeleteLists = lambda _first, count: saved["glDeleteLists"](number, count)
    _miniworld.glNewList = lambda _number, mode: saved["glNewList"](number, mode)
    _miniworld.glCallList = lambda _number: saved["glCallList"](number)
    try:
        yield
    finally:
        for name, call in saved.items():
            setattr(_miniworld, name, call)


class ObjectNavWorld(MiniWorldEnv):
    """One room of a `Scene` with its objects; the task moves the agent and its camera.
    Several can live in one process (a worker's task slots): each draws its own room."""

    def __init__(self, obs_width: int, obs_height: int) -> None:
        self.static_list: int | None = None  # its display list, made when first compiled
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
        """Compile this world's static part into its own display list (in its own context:
        miniworld's reset, which calls this, leaves the current one, perhaps a closed world's)."""
        self.shadow_window.switch_to()
        if self.static_list is None:
            self.static_list = int(gl.glGenLists(1))
        with _display_list(self.static_list):
            super()._render_static()

    def _render_world(self, frame_buffer: Any, render_agent: bool) -> np.ndarray:
        """Draw the world from its own display list."""
        with _display_list(self.static_list):
            return super()._render_world(frame_buffer, render_agent)

    def get_visible_ents(self) -> set[Entity]:
        """miniworld's occlusion-query visibility, deleting every query it made: miniworld
        deletes only the first of them (the expert's every step leaked ~2.8 KB). Its queries
        are made before it switches to this world's context, so in whichever world's was
        current (another sampler's, in a process with two): switched to first, else they
        were deleted in the wrong context and leaked ~0.7 KB a step."""
        self.shadow_window.switch_to()
        delete = _miniworld.glDeleteQueries
        _miniworld.glDeleteQueries = lambda _count, ids: delete(len(ids), ids)
        try:
            return super().get_visible_ents()
        finally:
            _miniworld.glDeleteQueries = delete

    def close(self) -> None:
        """Free what miniworld leaves (its close frees a display window only): the display
        list, the frame buffers (~36 MiB a world) and the hidden window's context."""
        if self.shadow_window is None:
            return
        self.shadow_window.switch_to()
        if self.static_list is not None:
            gl.glDeleteLists(self.static_list, 1)
            self.static_list = None
        for frame_buffer in (self.obs_fb, self.vis_fb):
            _delete_frame_buffer(frame_buffer)
        self.shadow_window.close()
        self.shadow_window = None
        super().close()


def _delete_frame_buffer(frame_buffer: Any) -> None:
    """Delete a miniworld FrameBuffer's objects: its two frame buffers (their names are all
    miniworld keeps) and, found through them, the texture and depth buffer of each."""
    for fbo in (frame_buffer.multi_fbo, frame_buffer.final_fbo):
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, fbo)
        texture, depth = gl.GLint(), gl.GLint()
        for attachment, name in (
            (gl.GL_COLOR_ATTACHMENT0, texture),
            (gl.GL_DEPTH_ATTACHMENT, depth),
        ):
            gl.glGetFramebufferAttachmentParameteriv(
                gl.GL_FRAMEBUFFER, attachment, gl.GL_FRAMEBUFFER_ATTACHMENT_OBJECT_NAME, name
            )
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, 0)
        gl.glDeleteTextures(1, ctypes.byref(gl.GLuint(texture.value)))
        gl.glDeleteRenderbuffers(1, ctypes.byref(gl.GLuint(depth.value)))
        gl.glDeleteFramebuffers(1, ctypes.byref(fbo))
