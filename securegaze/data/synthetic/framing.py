"""Framing of a rendered crop: where the head sits in the image when it turns.

Two framings (``SyntheticConfig.framing``):

``"head"`` (the renderer's original framing, what the project's zoo and tiny models train on): the
head ellipsoid's centre stays at its nominal place and the head turns about it, so the eyes and the
rest of the face move across the crop as the head turns (by ~0.17 crop units, 5 px of a 64-px crop,
at 12 deg of yaw).

``"face"``: the framing of data normalisation (Zhang, Sugano, Bulling, ETRA 2018) as the edge app
applies it (:mod:`edge_app.normalisation`): the virtual camera looks at the *face centre*, the mean
of the four eye corners and the two mouth corners, so that point stays at the centre of the crop
whatever the head pose; the head's x axis stays horizontal (roll removed). In this orthographic
renderer the head's x axis is horizontal exactly when the drawn roll is zero (the head rotation is
``Ry(yaw) Rx(-pitch) Rz(roll)``, whose first column has the vertical component ``sin(roll) cos(pitch)``),
so the roll jitter of the config is what is left of roll after the normalisation's landmark error,
and the face-centre shift is all that this module computes. The sample's ``head_offset`` jitter
(``SyntheticConfig.centre_jitter``) is kept on top, as the normalisation's face-centre error.

The arithmetic runs per sample in Python floats (``math.sin``), so a face's parameters do not depend
on the batch it is drawn with (NumPy's vectorised sine may round differently in different lanes).
"""

from __future__ import annotations

import math

import numpy as np

from securegaze.data.synthetic.layout import HEAD_CENTRE_Y
from securegaze.errors import ConfigError

FRAMINGS = ("head", "face")


def check_framing(name: str) -> None:
    if name not in FRAMINGS:
        raise ConfigError(f"framing must be one of {', '.join(FRAMINGS)}; got {name!r}")


def _surface_z(x: float, y: float, a: float, b: float, c: float) -> float:
    """Depth (negative: towards the camera) of the front of the head ellipsoid at head (x, y)."""
    return -c * math.sqrt(max(1.0 - (x / a) ** 2 - (y / b) ** 2, 1e-3))


def face_centre_head(params) -> np.ndarray:
    """(N, 3) float64 head-frame face centre: the mean of the four eye corners (the lid opening's
    ends, at the eye's height) and the two mouth corners, each on the head ellipsoid's surface."""
    out = np.empty((len(params), 3), np.float64)
    for i in range(len(params)):
        a, b, c = (float(v) for v in params.face_axes[i])
        dx, ey, hw = float(params.eye_dx[i]), float(params.eye_y[i]), float(params.eye_half_width[i])
        my, mw = float(params.mouth_y[i]), float(params.mouth_half_width[i])
        points = [(side * (dx + end * hw), ey) for side in (-1.0, 1.0) for end in (-1.0, 1.0)]
        points += [(-mw, my), (mw, my)]
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        zs = [_surface_z(x, y, a, b, c) for x, y in points]
        out[i] = (sum(xs) / 6.0, sum(ys) / 6.0, sum(zs) / 6.0)
    return out


def rotate_head_point(pitch: float, yaw: float, roll: float, point) -> tuple[float, float, float]:
    """Camera-frame offset of a head-frame point under the renderer's head rotation
    ``Ry(yaw) Rx(-pitch) Rz(roll)`` (:class:`~securegaze.data.synthetic.raycast.HeadFrame`)."""
    x, y, z = point
    cr, sr = math.cos(roll), math.sin(roll)
    x, y = cr * x - sr * y, sr * x + cr * y
    cp, sp = math.cos(pitch), math.sin(pitch)
    y, z = cp * y + sp * z, -sp * y + cp * z
    cy, sy = math.cos(yaw), math.sin(yaw)
    x, z = cy * x + sy * z, -sy * x + cy * z
    return x, y, z


def face_centred_offsets(params) -> np.ndarray:
    """(N, 2) float32 ``head_offset`` that puts each face's centre at the crop centre plus the
    sample's own offset jitter (the ``head_offset`` drawn for the head framing)."""
    centres = face_centre_head(params)
    out = np.empty((len(params), 2), np.float64)
    for i in range(len(params)):
        pitch, yaw, roll = (float(v) for v in params.head_pose[i])
        x, y, _ = rotate_head_point(pitch, yaw, roll, centres[i])
        scale = float(params.head_scale[i])
        jitter_x, jitter_y = (float(v) for v in params.head_offset[i])
        out[i] = (jitter_x - scale * x, jitter_y - scale * y - HEAD_CENTRE_Y)
    return out.astype(np.float32)
