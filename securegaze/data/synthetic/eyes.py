"""The eyes: 3-D eyeballs behind almond lid openings that follow the eye's pitch."""

from __future__ import annotations

import math

import numpy as np

from securegaze.data.synthetic.faces import FaceParams
from securegaze.data.synthetic.layout import (
    CARUNCLE_RGB,
    CORNER_RGB,
    EYE_WINDOW_HALF,
    EYEBALL_DEPTH,
    LASH_RGB,
    LASH_THICKNESS,
    LID_LOWER_FOLLOW,
    LID_LOWER_LIMITS,
    LID_UPPER_FOLLOW,
    LID_UPPER_LIMITS,
    OCCLUDER_BOTTOM,
    OCCLUDER_TOP,
    OCCLUDER_X,
    PUPIL_RGB,
    SOCKET_X,
    SOCKET_Y,
)
from securegaze.data.synthetic.raycast import (
    HeadFrame,
    Light,
    blend,
    cast_ellipsoid,
    clamp,
    col,
    rgb_col,
    surface_z,
)
from securegaze.data.triggers import edge_coverage
from securegaze.geometry import pitchyaw_to_vector


def eye_window_size(size: int) -> int:
    """Side in pixels of the square window around each eye in which the eye is drawn."""
    return int(min(size, 2 * math.ceil(EYE_WINDOW_HALF * size / 2 + 2.5)))


def eye_points(p: FaceParams, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Head-frame (N, 3) eye-opening centre on the skin and eyeball centre; side +1: subject's left."""
    axes = p.face_axes.astype(np.float64)
    x = side * p.eye_dx.astype(np.float64)
    y = p.eye_y.astype(np.float64)
    z = surface_z(x, y, axes)
    skin = np.stack([x, y, z], -1)
    ball = np.stack([x, y, z + EYEBALL_DEPTH * p.eyeball_radius], -1)
    return skin, ball


def _lid_heights(p: FaceParams, frame: HeadFrame) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lid heights (N,), eye half-widths, following the eye's pitch in the head."""
    gaze_head = np.einsum("nji,nj->ni", frame.rotation, pitchyaw_to_vector(p.gaze))
    sin_pitch = -gaze_head[:, 1]
    iris_shift = p.eyeball_radius / p.eye_half_width * sin_pitch
    upper = np.clip(p.lid_upper + LID_UPPER_FOLLOW * iris_shift, *LID_UPPER_LIMITS)
    lower = np.clip(p.lid_lower - LID_LOWER_FOLLOW * iris_shift, *LID_LOWER_LIMITS)
    return upper, lower


def _band(signed_px: np.ndarray, width_px) -> np.ndarray:
    """Coverage of a strip of ``width_px`` just outside an edge (signed distance, positive inside)."""
    return edge_coverage(np.minimum(signed_px + width_px, -signed_px))


def draw_eye(image, p: FaceParams, frame: HeadFrame, light: Light, side: int, occlude: bool,
             pupil_rgb: np.ndarray | None = None) -> None:
    """Draw one eye (lids, eyeball, iris, pupil, glint) into ``image`` (3, N, S, S), in place.

    ``pupil_rgb``: (N, 3) colour of the pupil per face (a bright pupil under an on-axis infrared
    illuminator); None: the dark pupil of visible light.

    The maths runs on a K x K window around each eye, gathered from the image, composited and
    written back.
    """
    n, size = image.shape[1], image.shape[2]
    pixel = frame.pixel
    k = eye_window_size(size)
    skin_pt, ball_pt = eye_points(p, side)
    centre_px = frame.to_pixels(frame.project(skin_pt))
    x0 = np.clip(np.round(centre_px[:, 0]).astype(np.int64) - k // 2, 0, size - k)
    y0 = np.clip(np.round(centre_px[:, 1]).astype(np.int64) - k // 2, 0, size - k)
    u = ((x0[:, None] + np.arange(k) + 0.5) * pixel - 1.0).astype(np.float32)[:, None, :]
    v = ((y0[:, None] + np.arange(k) + 0.5) * pixel - 1.0).astype(np.float32)[:, :, None]
    # Every K x K window of the image as a view; indexing it picks one window per face.
    windows = np.lib.stride_tricks.sliding_window_view(image, (k, k), axis=(2, 3), writeable=True)
    images = np.arange(n)
    base = windows[:, images, y0, x0]  # (3, N, K, K) copy

    # Eyelids live on the skin: eye-local coordinates on the head ellipsoid, in eye half-widths,
    # x towards the temple, y down.
    hit = cast_ellipsoid(frame, u, v, p.face_axes, full=False)
    inv_hw = 1.0 / p.eye_half_width
    x_loc = hit.x * col(side * inv_hw) - col(p.eye_dx * inv_hw)
    y_loc = hit.y * col(inv_hw) - col(p.eye_y * inv_hw)
    unit_px = col(p.eye_half_width * frame.px_per_unit)  # pixels per eye half-width
    upper, lower = _lid_heights(p, frame)
    mid = col(-p.canthal_tilt) * x_loc
    spread = 1.0 - x_loc * x_loc
    # Almond: the upper lid peaks slightly towards the nose, the lower lid dips towards the temple.
    upper_lid = mid - col(upper) * spread * (1.0 - 0.2 * x_loc)
    lower_lid = mid + col(lower) * spread * (1.0 + 0.2 * x_loc)
    d_up = (y_loc - upper_lid) * unit_px
    d_low = (lower_lid - y_loc) * unit_px
    opening = edge_coverage(np.minimum(d_up, d_low))

    # Eyeball: for pixels on the projected sphere, the front surface normal and its angle to the
    # gaze. rho is the distance from the gaze axis through the eyeball centre (image units), so
    # rho < iris radius is the iris disk seen from the camera, foreshortened as it turns.
    ball_xy = frame.project(ball_pt)
    radius = p.eyeball_radius * frame.scale
    gaze = pitchyaw_to_vector(p.gaze)
    dx, dy = u - col(ball_xy[:, 0]), v - col(ball_xy[:, 1])  # a row and a column
    r = col(radius)
    r2 = dx * dx + dy * dy
    nz = np.sqrt(np.maximum(1.0 - r2 * col(1.0 / radius**2), 0.0))  # minus the normal's z
    cos_t = (dx * col(gaze[:, 0] / radius) + dy * col(gaze[:, 1] / radius)) - nz * col(gaze[:, 2])
    rho = np.where(cos_t > 0, np.sqrt(np.maximum(1.0 - cos_t * cos_t, 0.0)), 1.0) * r
    inv_px = 1.0 / pixel
    iris_r = col(p.iris_ratio * radius)
    iris = edge_coverage((iris_r - rho) * inv_px)
    pupil = edge_coverage((col(p.pupil_ratio * p.iris_ratio * radius) - rho) * inv_px)
    on_ball = edge_coverage((r - np.sqrt(r2)) * inv_px)

    lid_shadow = 0.35 * clamp(1.0 - d_up / (0.35 * unit_px))
    sclera = rgb_col(p.sclera_rgb) * ((0.6 + 0.4 * nz) * (1.0 - lid_shadow))
    limbus = clamp(rho * col(1.0 / (0.3 * np.maximum(p.iris_ratio * radius, 1e-6))) - 0.7 / 0.3)
    eye = sclera
    blend(eye, rgb_col(p.iris_rgb) * ((1.12 - 0.6 * limbus) * (1.0 - 0.6 * lid_shadow)), iris)
    blend(eye, PUPIL_RGB[:, None, None, None] if pupil_rgb is None else rgb_col(pupil_rgb), pupil)
    eye = CORNER_RGB[:, None, None, None] + on_ball * (eye - CORNER_RGB[:, None, None, None])
    blend(eye, CARUNCLE_RGB[:, None, None, None], 0.8 * clamp((-x_loc - 0.75) * 4.0))

    # Corneal glint: the light's mirror image in the cornea (a sphere of ~0.55 eyeball radii whose
    # centre sits ~0.45 radii along the gaze), where the normal halves light and view directions.
    half = light.cam_dir + np.array([0.0, 0.0, -1.0])
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    glint_xy = ball_xy + radius[:, None] * (0.45 * gaze[:, :2] + 0.55 * half[:, :2])
    glint_r = 0.08 * radius + 0.3 * pixel
    gx, gy = (u - col(glint_xy[:, 0])) * col(1.0 / glint_r), (v - col(glint_xy[:, 1])) * col(1.0 / glint_r)
    glint = np.maximum(1.0 - (gx * gx + gy * gy), 0.0) ** 2 * col(0.85 * np.clip(-2.0 * light.cam_dir[:, 2], 0.0, 1.0))
    eye += glint * (1.0 - eye)

    normal = skin_pt / p.face_axes**2
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    eye_shade = light.shade(np.einsum("ni,ni->n", normal, light.head_dir))
    eye *= col(0.92 * eye_shade) * light.rgb

    # Skin around the eye: socket shadow and lid crease (both fixed, so they do not depend on
    # gaze), then the eye through the opening, the lower-lid line and the lashes on the upper lid.
    socket = np.maximum(1.0 - (x_loc * (1 / SOCKET_X)) ** 2 - ((y_loc + 0.1) * (1 / SOCKET_Y)) ** 2, 0.0)
    crease_y = mid - (col(p.lid_upper) + 0.32) * (1.0 - (x_loc * (1 / 1.15)) ** 2)
    crease = edge_coverage(np.minimum(0.05 - np.abs(y_loc - crease_y), 1.1 - np.abs(x_loc)) * unit_px)
    base *= 1.0 - 0.12 * socket - 0.22 * crease
    blend(base, eye, opening)
    lower_line = edge_coverage(np.minimum(np.minimum(d_low + 0.07 * unit_px, -d_low), (1.0 - np.abs(x_loc)) * unit_px))
    base *= 1.0 - 0.35 * lower_line
    lash = edge_coverage(np.minimum(np.minimum(d_up + LASH_THICKNESS * unit_px, -d_up), (1.08 - np.abs(x_loc)) * unit_px))
    blend(base, LASH_RGB[:, None, None, None] * light.rgb, 0.9 * lash)

    if occlude:
        # A flat patch of the local skin colour over the whole eye region. The +1.5 px keeps alpha
        # at exactly 1 one pixel beyond the extents, past every soft edge that depends on gaze,
        # and base * 0 + patch * 1 is exactly the patch.
        patch = light.lit(p.skin_rgb) * col(eye_shade)
        half_y = np.where(y_loc < 0, np.float32(OCCLUDER_TOP), np.float32(OCCLUDER_BOTTOM))
        cover = edge_coverage(np.minimum(OCCLUDER_X - np.abs(x_loc), half_y - np.abs(y_loc)) * unit_px + 1.5)
        base = base * (1.0 - cover) + patch * cover

    windows[:, images, y0, x0] = base


