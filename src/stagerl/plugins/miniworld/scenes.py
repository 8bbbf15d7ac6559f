"""ObjectNav scenes: a scene is a layout seed. Pure numpy (no OpenGL), so that layouts, distances
and the expert's map can be computed and tested anywhere.

A scene is one rectangular room, 5 to 8 m a side, holding three or four objects of distinct
types (one type sometimes twice). Scene ids of the splits never overlap.
"""

import math
from dataclasses import dataclass

import numpy as np

# type name -> (miniworld entity, colour, footprint radius in m); sorted by name, which is the
# order `goal_object_type_ind` indexes
OBJECT_TYPES: dict[str, tuple[str, str, float]] = {
    "Ball": ("ball", "red", 0.57),
    "Box": ("box", "green", 0.57),
    "Duckie": ("duckie", "yellow", 0.54),
    "Key": ("key", "blue", 0.43),
}
TYPE_NAMES = tuple(sorted(OBJECT_TYPES))
SCENE_RANGES = {"test": (0, 1_000), "valid": (1_000, 2_000), "train": (2_000, 2**31 - 1)}
AGENT_RADIUS = 0.4  # miniworld's agent
WALL_MARGIN = 0.25  # objects keep this far from the walls beyond their radius
CELL = 0.2  # the navigation grid's cell side, m


@dataclass(frozen=True)
class SceneObject:
    """An object of a scene: its type and where it stands on the floor (x, z in m)."""

    type: str
    x: float
    z: float

    @property
    def radius(self) -> float:
        """The object's footprint radius, in metres."""
        return OBJECT_TYPES[self.type][2]


@dataclass(frozen=True)
class Scene:
    """One room's size and objects, made from its id alone."""

    scene_id: int
    width: float  # x extent, m
    depth: float  # z extent, m
    objects: tuple[SceneObject, ...]

    @property
    def types(self) -> tuple[str, ...]:
        """The object types present, sorted."""
        return tuple(sorted({o.type for o in self.objects}))

    def clearance(self, x: float, z: float) -> float:
        """Distance (m) from a floor point to the nearest wall or object surface."""
        walls = min(x, self.width - x, z, self.depth - z)
        return min([walls, *(math.hypot(x - o.x, z - o.z) - o.radius for o in self.objects)])


def scene_ids(split: str, count: int) -> list[int]:
    """The first `count` scene ids of a split (train, valid or test)."""
    low, high = SCENE_RANGES[split]
    if count > high - low:
        raise ValueError(f"{split} has {high - low} scenes, {count} asked for")
    return list(range(low, low + count))


def build_scene(scene_id: int) -> Scene:
    """The scene of `scene_id`: room size, object types and places, all from the id."""
    rng = np.random.default_rng([scene_id, 7919])
    width, depth = rng.uniform(5.0, 8.0, size=2)
    count = int(rng.integers(3, 5))
    types = list(rng.choice(TYPE_NAMES, size=count, replace=False))
    if rng.random() < 0.3:  # a second object of a type present: "the nearest" matters
        types.append(types[int(rng.integers(len(types)))])
    placed: list[SceneObject] = []
    for name in types:
        radius = OBJECT_TYPES[name][2]
        for _ in range(1000):
            margin = radius + WALL_MARGIN
            x, z = rng.uniform(margin, width - margin), rng.uniform(margin, depth - margin)
            # leave room for the agent to pass between objects
            gap = 2 * AGENT_RADIUS + 0.2
            if all(np.hypot(x - o.x, z - o.z) > radius + o.radius + gap for o in placed):
                placed.append(SceneObject(str(name), float(x), float(z)))
                break
    return Scene(scene_id, float(width), float(depth), tuple(placed))


class NavigationMap:
    """A grid of `CELL` cells over a scene's floor: where the agent's centre may stand (clear
    of walls and objects by `clearance`, its radius by default), and the geodesic distance
    from every cell to the nearest cell within `reach` m of an object of the target type (the
    goal region)."""

    def __init__(
        self, scene: Scene, target_type: str, *, reach: float, clearance: float = AGENT_RADIUS
    ) -> None:
        self.scene = scene
        columns, rows = int(np.ceil(scene.width / CELL)), int(np.ceil(scene.depth / CELL))
        xs = (np.arange(columns) + 0.5) * CELL
        zs = (np.arange(rows) + 0.5) * CELL
        self.x, self.z = np.meshgrid(xs, zs, indexing="ij")  # [columns, rows]
        free = (
            (self.x >= clearance)
            & (self.x <= scene.width - clearance)
            & (self.z >= clearance)
            & (self.z <= scene.depth - clearance)
        )
        goal = np.zeros_like(free)
        for obj in scene.objects:
            surface = np.hypot(self.x - obj.x, self.z - obj.z) - obj.radius
            free &= surface >= clearance
            if obj.type == target_type:
                goal |= surface <= reach
        self.free = free
        self.goal = goal & free
        self.distance = _geodesic(self.free, self.goal)

    def cell(self, x: float, z: float) -> tuple[int, int]:
        """The grid cell of a floor point (clipped to the grid)."""
        i = int(np.clip(x // CELL, 0, self.free.shape[0] - 1))
        j = int(np.clip(z // CELL, 0, self.free.shape[1] - 1))
        return i, j

    def distance_from(self, x: float, z: float) -> float:
        """Geodesic distance (m) from a floor point to the goal region: over the cells around
        the point's, the least field value plus the straight way to that cell's centre (the
        nearest free cell's, where none around is reachable)."""
        i, j = self.cell(x, z)
        around = (slice(max(i - 1, 0), i + 2), slice(max(j - 1, 0), j + 2))
        values = self.distance[around] + np.hypot(self.x[around] - x, self.z[around] - z)
        if np.isfinite(values).any():
            return float(values.min())
        reachable = np.isfinite(self.distance)
        ways = np.hypot(self.x[reachable] - x, self.z[reachable] - z)
        return float((self.distance[reachable] + ways).min())

    def path(self, x: float, z: float, *, ahead: float) -> list[tuple[float, float]]:
        """The cells (their centres) of the first `ahead` m of the shortest path from a floor
        point to the goal region, descending the distance field cell by cell."""
        i, j = self.cell(x, z)
        points: list[tuple[float, float]] = []
        travelled = 0.0
        while travelled < ahead and self.distance[i, j] > 0:
            best = (self.distance[i, j], i, j)
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    a, b = i + di, j + dj
                    if 0 <= a < self.free.shape[0] and 0 <= b < self.free.shape[1]:
                        best = min(best, (self.distance[a, b], a, b))
            if (best[1], best[2]) == (i, j):
                break
            travelled += CELL * float(np.hypot(best[1] - i, best[2] - j))
            i, j = best[1], best[2]
            points.append((float(self.x[i, j]), float(self.z[i, j])))
        return points


def _geodesic(free: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Distances over free cells (8-connected, diagonals sqrt 2) to the nearest goal cell, in
    m; inf where no path. Relaxed with whole-array shifts until nothing changes."""
    distance = np.where(goal, 0.0, np.inf)
    steps = [(di, dj, CELL * np.hypot(di, dj)) for di in (-1, 0, 1) for dj in (-1, 0, 1)]
    steps = [s for s in steps if s[:2] != (0, 0)]
    while True:
        padded = np.pad(distance, 1, constant_values=np.inf)
        best = distance.copy()
        for di, dj, cost in steps:
            shifted = padded[1 + di : padded.shape[0] - 1 + di, 1 + dj : padded.shape[1] - 1 + dj]
            best = np.minimum(best, shifted + cost)
        best = np.where(free, best, np.inf)
        if np.array_equal(best, distance):
            return distance
        distance = best
