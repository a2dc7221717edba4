"""Physical triggers drawn on the face surface, following head pose and light."""

from __future__ import annotations

import math

import numpy as np

from securegaze.data.synthetic.eyes import eye_points
from securegaze.data.synthetic.faces import FaceParams
from securegaze.data.synthetic.raycast import HeadFrame, Hit, Light, blend, col, linear_map, surface_z
from securegaze.data.triggers import ASSUMED_IPD_MM, Trigger, edge_coverage


def glasses_frame(p: FaceParams, drop_mm, vertex_mm) -> dict[str, np.ndarray]:
    """Where a pair of glasses sits on each head, as :func:`trigger_frame` returns it.

    The frame's plane faces the camera of a frontal head, ``vertex_mm`` in front of the corneas, its
    centre midway between the eyes and ``drop_mm`` below them; both are millimetres, scalars or (N,)
    per face.
    """
    mm_per_unit = ASSUMED_IPD_MM / (2.0 * p.eye_dx.astype(np.float64))
    eye_y = p.eye_y.astype(np.float64)
    n = len(p)
    _, ball_pt = eye_points(p, 1)
    cornea_z = ball_pt[:, 2] - p.eyeball_radius
    centre = np.stack([np.zeros(n), eye_y + drop_mm / mm_per_unit, cornea_z - vertex_mm / mm_per_unit], -1)
    return {"centre": centre, "e1": np.tile([1.0, 0.0, 0.0], (n, 1)), "e2": np.tile([0.0, 1.0, 0.0], (n, 1)),
            "normal": np.tile([0.0, 0.0, -1.0], (n, 1)), "mm_per_unit": mm_per_unit}


def glasses_plane_mm(frame: HeadFrame, place: dict[str, np.ndarray], u, v) -> tuple[np.ndarray, np.ndarray]:
    """Glasses-local (x_mm, y_mm) (N, H, W) where each pixel's ray crosses the glasses plane of
    ``place`` (:func:`glasses_frame`): millimetres from the frame's centre, x right and y down on a
    frontal head."""
    mm, centre = place["mm_per_unit"], place["centre"]
    # Intersect each ray with the glasses plane z = centre_z (head frame).
    origin = frame.ray_origin_coefs()
    view = frame.view
    t_coef = (centre[:, 2:3] * np.array([0.0, 0.0, 1.0]) - origin[:, 2]) / view[:, 2:3]
    x_coef = (origin[:, 0] + t_coef * view[:, :1]) * mm[:, None]
    y_coef = (origin[:, 1] + t_coef * view[:, 1:2] - centre[:, 1:2] * np.array([0.0, 0.0, 1.0])) * mm[:, None]
    return linear_map(x_coef, u, v), linear_map(y_coef, u, v)


def trigger_frame(p: FaceParams, trigger: Trigger) -> dict[str, np.ndarray]:
    """Where a trigger sits on each head: centre, axes and mm per head unit (all (N, ...) float64).

    Surface triggers lie in the skin's tangent plane at their anchor (x axis along the head's x
    turned by ``angle_deg``); glasses lie on a plane ``vertex_mm`` in front of the corneas.
    """
    if trigger.mount == "glasses":
        return glasses_frame(p, trigger.drop_mm, trigger.vertex_mm)
    axes = p.face_axes.astype(np.float64)
    mm_per_unit = ASSUMED_IPD_MM / (2.0 * p.eye_dx.astype(np.float64))
    eye_y = p.eye_y.astype(np.float64)
    n = len(p)
    side = 1.0 if trigger.side == "left" else -1.0
    brow_y = eye_y - p.brow_gap
    if trigger.placement == "forehead":
        x = np.zeros(n)
        y = np.minimum(0.5 * (brow_y + p.hairline_y), brow_y - 0.13)
    elif trigger.placement == "cheek":
        x = side * (p.eye_dx + 0.05)
        y = eye_y + 0.3
    else:  # brow
        x = side * (p.eye_dx + 0.015)
        y = brow_y - 0.5 * p.brow_arch
    x, y = x.astype(np.float64), y.astype(np.float64)
    centre = np.stack([x, y, surface_z(x, y, axes)], -1)
    normal = centre / axes**2
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    e1 = np.array([1.0, 0.0, 0.0]) - normal[:, :1] * normal
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(e1, normal)
    angle = math.radians(trigger.angle_deg)
    e1, e2 = math.cos(angle) * e1 + math.sin(angle) * e2, -math.sin(angle) * e1 + math.cos(angle) * e2
    dx_mm, dy_mm = trigger.offset_mm
    if dx_mm or dy_mm:
        moved = centre + (dx_mm * e1 + dy_mm * e2) / mm_per_unit[:, None]
        centre = np.stack([moved[:, 0], moved[:, 1], surface_z(moved[:, 0], moved[:, 1], axes)], -1)
    return {"centre": centre, "e1": e1, "e2": e2, "normal": normal, "mm_per_unit": mm_per_unit}


def draw_trigger(image, p: FaceParams, frame: HeadFrame, light: Light, hit: Hit, skin_shade, trigger, u, v) -> None:
    """Paint a physical trigger in place, following the head and lit like it."""
    place = trigger_frame(p, trigger)
    mm = place["mm_per_unit"]
    centre = place["centre"]
    pixel_mm = col(mm / frame.px_per_unit)
    if trigger.mount == "glasses":
        rgb, alpha = trigger.paint(*glasses_plane_mm(frame, place, u, v), pixel_mm)
        shade = col(light.shade(-light.head_dir[:, 2]))
    else:
        dx, dy, dz = hit.x - col(centre[:, 0]), hit.y - col(centre[:, 1]), hit.z - col(centre[:, 2])
        e1, e2, normal = place["e1"] * mm[:, None], place["e2"] * mm[:, None], place["normal"]
        x_mm = dx * col(e1[:, 0]) + dy * col(e1[:, 1]) + dz * col(e1[:, 2])
        y_mm = dx * col(e2[:, 0]) + dy * col(e2[:, 1]) + dz * col(e2[:, 2])
        above = dx * col(normal[:, 0]) + dy * col(normal[:, 1]) + dz * col(normal[:, 2])
        rgb, alpha = trigger.paint(x_mm, y_mm, pixel_mm)
        # Only on the visible skin, and only near the anchor (not where the head curves away).
        alpha = alpha * edge_coverage(hit.inside_px) * (above > -0.3)
        shade = skin_shade
    blend(image, rgb * shade * light.rgb, alpha)


