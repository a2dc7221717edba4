"""The face layers: background, back hair and neck, and the face surface (skin, brows, nose, mouth, hair)."""

from __future__ import annotations

import numpy as np

from securegaze.data.synthetic.faces import FaceParams
from securegaze.data.synthetic.layout import HEAD_CENTRE_Y
from securegaze.data.synthetic.raycast import (
    HeadFrame,
    Hit,
    Light,
    blend,
    clamp,
    col,
    linear_map,
    rgb_col,
    surface_z,
)
from securegaze.data.triggers import edge_coverage


def background(p: FaceParams, u, v) -> np.ndarray:
    """(3, N, H, W) backdrop: a gradient between two colours, linear along a random direction or (where
    ``background_radial`` is 1) radial from behind the head to the corners, times a texture of
    sinusoids where ``background_contrast`` is above 0. Untextured linear gradients (the "gradient"
    backdrop) skip the rest, so their pixels are what they always were."""
    angle = p.background_angle.astype(np.float64)
    coef = np.stack([0.5 * np.cos(angle), 0.5 * np.sin(angle), np.full_like(angle, 0.5)], -1)
    w = clamp(linear_map(coef, u, v))
    if np.any(p.background_radial):
        # Distance from the head centre, 1 at the far corners.
        radial = np.sqrt(u * u + (v - HEAD_CENTRE_Y) ** 2) * (1.0 / np.hypot(1.0, 1.0 - HEAD_CENTRE_Y))
        mix = col(p.background_radial)
        w = w * (1.0 - mix) + clamp(radial * radial) * mix
    c0, c1 = rgb_col(p.background_rgb[:, 0]), rgb_col(p.background_rgb[:, 1])
    image = c0 + (c1 - c0) * w
    if np.any(p.background_contrast):
        texture = np.zeros_like(w)
        for direction, cycles, phase in np.moveaxis(p.background_texture.astype(np.float64), (1, 2), (0, 1)):
            freq = np.pi * cycles  # u, v span 2 units: cycles per crop
            wave = np.stack([freq * np.cos(direction), freq * np.sin(direction), phase], -1)
            texture += np.sin(linear_map(wave, u, v))
        image *= 1.0 + col(p.background_contrast / 3.0) * texture
    return image


def draw_back_hair_and_neck(image, p: FaceParams, frame: HeadFrame, light: Light, hit: Hit, u, v) -> None:
    """Hair volume around the head (outside the face ellipsoid) and the neck below the jaw.

    The hair volume is the face outline grown by ``hair_volume`` (more on top), down to
    ``hair_length``: an offset of the silhouette distance, which costs no second ray cast.
    """
    axes = p.face_axes
    to_px = col(frame.px_per_unit)
    above = clamp(hit.y_closest * col(-1.0 / axes[:, 1]))
    grow = col(p.hair_volume * axes[:, 0] * frame.px_per_unit) * (1.0 + 0.6 * above)
    hair = np.minimum(hit.inside_px + grow, (col(p.hair_length) - hit.y_closest) * to_px)
    blend(image, light.lit(p.hair_rgb) * col(0.8 * light.ambient + 0.15), edge_coverage(hair))

    # The neck hangs below the head centre and does not turn with the head's pitch and yaw. A box:
    # the product of a column and a row coverage.
    inv_px = 1.0 / frame.pixel
    half_width = col(0.5 * axes[:, 0] * frame.scale)
    across = edge_coverage((half_width - np.abs(u - col(frame.offset[:, 0]))) * inv_px)
    below = edge_coverage((v - col(frame.offset[:, 1] + 0.6 * frame.scale)) * inv_px)
    blend(image, light.lit(p.skin_rgb) * col(0.7 * light.ambient + 0.12), across * below)


def _row_band(frame: HeadFrame, p: FaceParams, half_width, y_top, y_bottom, size: int) -> slice:
    """Image rows that can show head-surface points with |x| <= half_width and y_top <= y <= y_bottom.

    All arguments are (N,) head units; the band is the union over the chunk, plus a margin for the
    soft edges. Small features are computed on their band only: what they compute is pointwise
    arithmetic, so a face's pixels do not depend on the band's extent.
    """
    axes = p.face_axes.astype(np.float64)
    rows = []
    for x_frac in (-1.0, 0.0, 1.0):
        for y in (y_top, y_bottom):
            x = x_frac * np.asarray(half_width, np.float64)
            y = np.asarray(y, np.float64)
            point = np.stack([x, y, surface_z(x, y, axes)], -1)
            rows.append(frame.to_pixels(frame.project(point))[:, 1])
    rows = np.concatenate(rows)
    return slice(int(np.clip(np.floor(rows.min()) - 3, 0, size)), int(np.clip(np.ceil(rows.max()) + 4, 0, size)))


def face_layer(p: FaceParams, frame: HeadFrame, light: Light, hit: Hit):
    """Skin, nose, mouth, brows and hair on the head ellipsoid.

    Returns (rgb (3, N, H, W) lit colour, alpha (N, H, W), skin shade (N, H, W) without the nose
    bump, which the surface triggers reuse). Edges are signed distances in pixels; unions and
    intersections of shapes are max / min of distances, anti-aliased once.
    """
    X, Y = hit.x, hit.y
    size = X.shape[-1]
    axes = p.face_axes.astype(np.float64)
    to_px = col(frame.px_per_unit)

    qx, qy, qz = hit.q
    light_q = light.head_dir / axes  # n . L with n = q / axes, before normalising n
    nx, ny, nz = qx * col(1.0 / axes[:, 0]), qy * col(1.0 / axes[:, 1]), qz * col(1.0 / axes[:, 2])
    n_dot_l = (qx * col(light_q[:, 0]) + qy * col(light_q[:, 1]) + qz * col(light_q[:, 2]))
    n_dot_l /= np.sqrt(nx * nx + ny * ny + nz * nz)
    skin_shade = light.shade(n_dot_l)
    shade = skin_shade.copy()

    # Hair on the head: above the hairline (lower at the temples) and over the sides.
    hairline = col(p.hairline_y) + X * X * col(0.3 / axes[:, 0] ** 2)
    side = np.minimum(np.abs(X) - col((0.93 - 0.13 * p.hair_side) * axes[:, 0]), col(p.hair_length) - Y)
    hair = edge_coverage(np.maximum(hairline - Y, side) * to_px)
    skin_rgb = light.lit(p.skin_rgb)
    albedo = skin_rgb + (light.lit(p.hair_rgb) - skin_rgb) * hair

    # Nose: a height field standing out of the ellipsoid. Its features are looked up with a
    # parallax shift (a point at height h appears displaced by h * view_xy / view_z), and its slopes
    # tilt the normal, which shades the side facing away from the light.
    view = frame.view
    shift_x = 0.6 * p.nose_height * view[:, 0] / view[:, 2]
    shift_y = 0.6 * p.nose_height * view[:, 1] / view[:, 2]
    band = _row_band(frame, p, 1.8 * p.nose_width + np.abs(shift_x), p.eye_y - 0.12 - np.abs(shift_y),
                     p.nose_y + 0.08 + np.abs(shift_y), size)
    xn, yn = X[:, band] - col(shift_x), Y[:, band] - col(shift_y)
    top = p.eye_y + 0.03
    across = np.maximum(1.0 - xn * xn * col(1.0 / (1.7 * p.nose_width) ** 2), 0.0)
    # Along the nose, s = 0 at the top of the bridge and 1 at the nostrils: the height fades in
    # above the bridge (0 at s = -0.43), rises to the tip, and falls off by s = 1.35.
    s = (yn - col(top)) * col(1.0 / (p.nose_y - top))
    along = np.maximum(np.minimum(0.3 + 0.7 * s, (1.35 / 0.35) - s * (1 / 0.35)), 0.0)
    bump = across * across * along * col(p.nose_height * frame.px_per_unit)  # pixels
    slope_y, slope_x = np.gradient(bump, axis=(1, 2))
    tilt = slope_x * col(-light.head_dir[:, 0]) + slope_y * col(-light.head_dir[:, 1])
    shade[:, band] = light.shade(n_dot_l[:, band] + 0.5 * tilt)
    # Nostrils: two dark ellipses either side of the nose axis.
    nose_w = col(p.nose_width)
    nostril_r = np.sqrt(((np.abs(xn) - 0.55 * nose_w) * (1 / 0.32)) ** 2 + ((yn - col(p.nose_y)) * (1 / 0.16)) ** 2)
    nostril = edge_coverage((nose_w - nostril_r) * col(0.16 * frame.px_per_unit))
    albedo[:, :, band] *= 1.0 - 0.55 * nostril

    # Mouth: lips between two arcs, a dark line where they meet.
    band = _row_band(frame, p, p.mouth_half_width, p.mouth_y - 1.5 * p.lip_thickness,
                     p.mouth_y + 1.5 * p.lip_thickness, size)
    Xb, Yb = X[:, band], Y[:, band]
    mx2 = Xb * Xb * col(1.0 / p.mouth_half_width**2)
    envelope = np.sqrt(np.maximum(1.0 - mx2, 0.0))
    my, lip = col(p.mouth_y), col(p.lip_thickness)
    upper = my - lip * envelope * (0.9 - 0.25 * np.maximum(1.0 - 25.0 * mx2, 0.0))
    lower = my + 1.25 * lip * envelope
    lips = edge_coverage(np.minimum(Yb - upper, lower - Yb) * to_px) * np.minimum(8.0 * envelope, 1.0)
    mouth = albedo[:, :, band]
    blend(mouth, light.lit(p.lip_rgb), 0.9 * lips)
    line = edge_coverage((0.175 * lip - np.abs(Yb - my - 0.01 * mx2)) * to_px + 0.3) * np.minimum(4.0 * envelope, 1.0)
    mouth *= 1.0 - 0.6 * line

    # Brows: arcs above the eyes, thicker at the inner end.
    brow_y = p.eye_y - p.brow_gap
    band = _row_band(frame, p, p.eye_dx + 0.25, brow_y - p.brow_arch - p.brow_thickness,
                     brow_y + p.brow_thickness, size)
    Xb, Yb = X[:, band], Y[:, band]
    brow_x = np.abs(Xb) - col(p.eye_dx + 0.015)
    half_len = 0.2
    along_brow = clamp((brow_x + half_len) * (1 / (2 * half_len)))
    centre = col(brow_y) - col(p.brow_arch) * (1.0 - ((brow_x - 0.05) * (1 / 0.25)) ** 2)
    half_thick = col(0.5 * p.brow_thickness) * (1.2 - 0.8 * along_brow * along_brow)
    brows = edge_coverage(np.minimum(half_thick - np.abs(Yb - centre), half_len - np.abs(brow_x)) * to_px)
    blend(albedo[:, :, band], light.lit(p.brow_rgb), 0.9 * brows)

    albedo *= shade

    # The face outline: the ellipsoid's silhouette pulled in along the jaw (most at mid-height of the
    # lower face, not at the chin). It is an offset of the silhouette distance along the ray's closest
    # approach, both continuous across the outline, so the cut leaves no stray pixels at the edge.
    t2 = clamp(hit.y_closest * col(1.0 / axes[:, 1])) ** 2
    jaw_cut = t2 * (1.0 - t2) * col(2.5 * p.jaw_taper * axes[:, 0] * frame.px_per_unit)
    return albedo, edge_coverage(hit.inside_px - jaw_cut), skin_shade


