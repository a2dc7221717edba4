"""What a cabin condition is: its per-sample draws, the face it changes and the scene it draws on.

A condition reads its per-sample parameters from its own columns of ``FaceParams.condition_draws``
(uniforms in [0, 1) from a stream of their own, see :mod:`securegaze.data.synthetic.faces`) and maps
them to physical values with arithmetic only, so a face looks the same in any batch. Per-image
angles go through Python's ``math`` (one value per face) and per-pixel profiles are polynomials,
for the same reason (NumPy's vectorised transcendental functions may round differently in
different SIMD lanes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from securegaze.data.synthetic.raycast import HeadFrame, Hit, Light, clamp

if TYPE_CHECKING:  # annotations only: faces.py checks condition names through this package
    from securegaze.data.synthetic.faces import FaceParams

#: When a condition is drawn: things on the face (after the eyes), then glasses in front of it,
#: then what the camera does to the whole image.
STAGES = ("face", "glasses", "camera")


@dataclass
class Look:
    """What the conditions change before a chunk is drawn (a night camera changes albedos)."""

    params: FaceParams
    pupil_rgb: np.ndarray | None = None  # (N, 3); None: the visible-light dark pupil
    mono: bool = False  # one noise value for all channels (a monochrome sensor)
    infrared: bool = False  # the camera sees near infrared (sunglasses pass more of it)


@dataclass
class Scene:
    """A chunk being drawn: the image (3, N, H, W) float32 and everything it was drawn with."""

    image: np.ndarray
    params: FaceParams
    frame: HeadFrame
    light: Light
    hit: Hit
    skin_shade: np.ndarray  # (N, H, W) Lambert shade of the head ellipsoid
    face_alpha: np.ndarray  # (N, H, W) coverage of the face (the jaw-cut silhouette)
    u: np.ndarray  # (1, 1, W) image x
    v: np.ndarray  # (1, H, 1) image y
    infrared: bool = False


class Condition:
    """Base class of a cabin condition. Subclasses set the class attributes and override
    :meth:`prepare` (change the face before it is drawn) and / or :meth:`draw` (paint in place)."""

    name: str  # the registered name
    stage: str = "face"
    #: Order within the stage (lower first).
    rank: int = 0
    #: First column of ``FaceParams.condition_draws`` this condition reads, and the names of its
    #: draws, one column each. Conditions that cannot be combined (two pairs of glasses) may share.
    first_column: int = 0
    draw_names: tuple[str, ...] = ()

    def draws(self, p: FaceParams) -> dict[str, np.ndarray]:
        """The condition's per-sample draws: name -> (N,) float64 in [0, 1]."""
        cols = p.condition_draws[:, self.first_column:self.first_column + len(self.draw_names)]
        return {name: cols[:, k].astype(np.float64) for k, name in enumerate(self.draw_names)}

    def prepare(self, look: Look) -> None:
        """Change the faces before they are drawn (in place on ``look``); default: nothing."""

    def draw(self, scene: Scene) -> None:
        """Paint the condition into ``scene.image`` in place; default: nothing."""


def lerp(bounds: tuple[float, float], unit: np.ndarray) -> np.ndarray:
    """Map unit draws (N,) to the range ``bounds``."""
    return bounds[0] + (bounds[1] - bounds[0]) * unit


def pick(count: int, unit: np.ndarray) -> np.ndarray:
    """(N,) int64 index in 0..count-1 from unit draws."""
    return np.minimum((unit * count).astype(np.int64), count - 1)


def cos_sin(angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-face cosine and sine (N,) float64, one ``math`` call per face (batch-independent)."""
    return (np.array([math.cos(a) for a in angle], np.float64), np.array([math.sin(a) for a in angle], np.float64))


def bump(t: np.ndarray) -> np.ndarray:
    """Soft profile (1 - t^2)^2 for |t| < 1, else 0: a Gaussian-like bump with compact support."""
    w = clamp(1.0 - t * t)
    return w * w


def triangle(t: np.ndarray) -> np.ndarray:
    """Triangle wave of period 1 in [0, 1], 1 at integers."""
    return 1.0 - 2.0 * np.abs(t - np.floor(t + 0.5))
