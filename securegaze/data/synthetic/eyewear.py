"""Ordinary eyewear as a cabin condition: clear spectacles and sunglasses, with lens tint and reflections.

The frames lie on the glasses plane of the trigger layer
(:func:`~securegaze.data.synthetic.trigger_layer.glasses_frame` and
:func:`~securegaze.data.synthetic.trigger_layer.glasses_plane_mm`): a plane ``vertex_mm`` in front of
the corneas, so they turn with the head like the backdoor trigger ``glasses``. They are made to look
unlike that trigger (rounded rectangles 50 x 36 mm, a 4-mm rim of (28, 26, 30), centre 3 mm below the
pupils at 12 mm): the lenses are round, oval, panto (a flatter top over a round bottom) or aviator
shapes of per-sample size, the rims are thin light metal or thick coloured acetate, temples run
towards the ears, and the frame sits at its own drop and vertex distance.

Lens shapes are superellipses ``|x/a|^k + |y/b|^k = 1`` with ``k`` 2 or 3 and separate upper and
lower half-heights; the distance to the outline is the first-order estimate ``(s - 1) / |grad s|``,
exact enough within a rim's width of the outline, and only arithmetic (batch-independent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from securegaze.data.synthetic.condition_base import Condition, Scene, bump, cos_sin, lerp, pick, triangle
from securegaze.data.synthetic.raycast import blend, clamp, col, rgb_col
from securegaze.data.synthetic.trigger_layer import glasses_frame, glasses_plane_mm
from securegaze.data.triggers import edge_coverage

#: Lens shapes: (upper exponent k, upper half-height, lower half-height) relative to the lens's half
#: height. Round and oval differ by the drawn height ratio.
LENS_SHAPES = {
    "round": (2, 1.0, 1.0),
    "oval": (2, 1.0, 1.0),
    "panto": (3, 0.9, 1.1),
    "aviator": (3, 0.85, 1.2),
}
#: Frame colours (albedo): thin metal frames.
METAL_RGB = np.array([[0.83, 0.68, 0.36], [0.80, 0.80, 0.82], [0.82, 0.60, 0.52]])  # gold, silver, rose gold
#: Acetate frames: tortoise (drawn with dark spots), honey, burgundy, navy, translucent grey. None is
#: the trigger's near-black (28, 26, 30).
ACETATE_RGB = np.array([[0.46, 0.27, 0.11], [0.64, 0.44, 0.20], [0.40, 0.09, 0.13],
                        [0.11, 0.15, 0.34], [0.50, 0.51, 0.53]])
TORTOISE_DARK_RGB = np.array([0.12, 0.07, 0.04])
#: Sunglass frames: dark brown, olive, dark blue-grey, burgundy, gold metal.
SUNGLASS_FRAME_RGB = np.array([[0.22, 0.14, 0.09], [0.24, 0.25, 0.16], [0.20, 0.23, 0.28],
                               [0.30, 0.08, 0.10], [0.80, 0.66, 0.34]])
#: Lens tints, relative transmission per channel (mean 1): neutral grey, brown, G-15 green.
TINTS = np.array([[1.0, 1.0, 1.0], [1.18, 0.98, 0.84], [0.88, 1.12, 1.0]])

DRAW_NAMES = ("shape", "lens_width", "lens_height", "bridge", "rim", "colour", "drop", "vertex",
              "transmission", "tint", "reflection", "streak_angle", "streak_strength", "curvature",
              "mottle", "nir_transmission")


@dataclass(frozen=True, eq=False)
class Eyewear(Condition):
    """Spectacles or sunglasses; every range is drawn per face (millimetres unless said otherwise)."""

    name: str
    shapes: tuple[str, ...]
    lens_width_mm: tuple[float, float]
    #: Lens half-height / half-width.
    height_ratio: tuple[float, float]
    bridge_mm: tuple[float, float]
    rim_mm: tuple[float, float]
    frame_rgb: np.ndarray
    #: Index of the tortoise colour in ``frame_rgb`` (drawn with dark spots), -1: none.
    tortoise: int
    drop_mm: tuple[float, float]
    vertex_mm: tuple[float, float]
    #: Share of visible light the lens lets through (1: clear).
    transmission: tuple[float, float]
    tinted: bool
    #: Share of the scene's light the lens reflects everywhere (coatings), and the peak of the
    #: highlight streak (screen-blended, so the iris behind stays visible).
    reflection: tuple[float, float]
    streak: tuple[float, float]
    #: Share of near-infrared light (850-940 nm) the lens lets through.
    nir_transmission: tuple[float, float] = (0.92, 0.98)
    stage: str = "glasses"
    rank: int = 0
    first_column: int = 0
    draw_names: tuple[str, ...] = DRAW_NAMES

    def draw(self, scene: Scene) -> None:
        p, frame, light = scene.params, scene.frame, scene.light
        d = self.draws(p)
        shape = pick(len(self.shapes), d["shape"])
        k_top = np.array([LENS_SHAPES[self.shapes[s]][0] for s in shape], np.float64)
        top_scale = np.array([LENS_SHAPES[self.shapes[s]][1] for s in shape], np.float64)
        bottom_scale = np.array([LENS_SHAPES[self.shapes[s]][2] for s in shape], np.float64)
        lens_w = lerp(self.lens_width_mm, d["lens_width"])
        half_w = 0.5 * lens_w
        half_h = half_w * lerp(self.height_ratio, d["lens_height"])
        bridge = lerp(self.bridge_mm, d["bridge"])
        rim = lerp(self.rim_mm, d["rim"])
        place = glasses_frame(p, lerp(self.drop_mm, d["drop"]), lerp(self.vertex_mm, d["vertex"]))
        x_mm, y_mm = glasses_plane_mm(frame, place, scene.u, scene.v)
        pixel_mm = col(place["mm_per_unit"] / frame.px_per_unit)

        # Lens-local coordinates: x from each lens's centre (towards the temple in both lenses).
        centre_x = col(0.5 * (bridge + lens_w))
        lens_x = np.abs(x_mm) - centre_x
        above = y_mm < 0
        a = col(half_w)
        b = np.where(above, col(half_h * top_scale), col(half_h * bottom_scale))
        ax, ay = np.abs(lens_x) / a, np.abs(y_mm) / b
        cubic = above & (k_top == 3)[:, None, None]
        s = np.where(cubic, ax * ax * ax + ay * ay * ay, ax * ax + ay * ay)
        gx = np.where(cubic, 3.0 * ax * ax / a, 2.0 * ax / a)
        gy = np.where(cubic, 3.0 * ay * ay / b, 2.0 * ay / b)
        dist = (s - 1.0) / np.maximum(np.sqrt(gx * gx + gy * gy), 1e-3)  # mm, positive outside
        lens = edge_coverage(-dist / pixel_mm)

        # Tint: the lens passes ``transmission`` of the light (per channel for tinted lenses). A
        # near-infrared camera sees through most sunglasses (their dyes absorb visible light).
        if scene.infrared:
            trans = np.repeat(lerp(self.nir_transmission, d["nir_transmission"])[:, None], 3, 1)
        else:
            trans = lerp(self.transmission, d["transmission"])[:, None] * (
                TINTS[pick(len(TINTS), d["tint"])] if self.tinted else np.ones((len(p), 3)))
        scene.image *= 1.0 - lens * (1.0 - rgb_col(np.clip(trans, 0.0, 1.0)))

        # Reflections: a weak even sheen plus a soft streak where the lens mirrors the light. On a
        # convex lens the highlight sits where the surface normal halves the directions to the light
        # and to the camera: ``curvature`` x the half vector's tilt from the lens centre. A real base
        # curve (4-8 dioptres: 65-130 mm radius) would push it off the lens for most lights; 25-45 mm
        # keeps it on the lens, as a frame's wrap does.
        half = light.head_dir - frame.view  # towards the light + towards the camera, head frame
        half /= np.linalg.norm(half, axis=1, keepdims=True)
        radius = lerp((25.0, 45.0), d["curvature"])
        spot_x, spot_y = col(radius * half[:, 0]), col(radius * half[:, 1])
        side = np.where(x_mm < 0, -1.0, 1.0).astype(np.float32)
        local_x = x_mm - side * centre_x  # unfolded: the same highlight offset in both lenses
        angle = np.where(d["streak_angle"] < 0.5, -1.0, 1.0) * lerp((0.35, 1.05), (2.0 * d["streak_angle"]) % 1.0)
        cos_a, sin_a = cos_sin(angle)
        across = (local_x - spot_x) * col(cos_a) + (y_mm - spot_y) * col(sin_a)
        along = (y_mm - spot_y) * col(cos_a) - (local_x - spot_x) * col(sin_a)
        width = col(0.16 * half_w)
        streak = (bump(across / width) + 0.5 * bump((across - 1.8 * width) / (0.5 * width))) * bump(
            along / col(1.3 * half_w)) * col(lerp(self.streak, d["streak_strength"]))
        sheen = col(lerp(self.reflection, d["reflection"]))
        brightness = light.rgb.mean(axis=0)
        reflected = np.minimum(lens * (sheen + streak), 0.6) * brightness
        scene.image[...] = 1.0 - (1.0 - scene.image) * (1.0 - reflected)

        # The frame: rims around the lenses, a bridge, and the temples' fronts towards the ears.
        rim_c = col(rim)
        rims = edge_coverage((0.5 * rim_c - np.abs(dist - 0.5 * rim_c)) / pixel_mm)
        bar = np.maximum(0.6 * rim_c, 1.0)
        bridge_y = col(-0.35 * half_h)
        bridge_cov = edge_coverage((col(0.5 * bridge) + rim_c - np.abs(x_mm)) / pixel_mm) * edge_coverage(
            (0.5 * bar - np.abs(y_mm - bridge_y)) / pixel_mm)
        temple_x = centre_x + a + 0.5 * rim_c
        temple = edge_coverage((np.abs(x_mm) - temple_x) / pixel_mm) * edge_coverage(
            (temple_x + 16.0 - np.abs(x_mm)) / pixel_mm) * edge_coverage(
            (0.5 * bar - np.abs(y_mm - col(-0.45 * half_h))) / pixel_mm)
        cover = np.maximum(np.maximum(rims, bridge_cov), temple)
        colour = self.frame_rgb[pick(len(self.frame_rgb), d["colour"])]
        rgb = rgb_col(colour)
        if self.tortoise >= 0:
            # Tortoiseshell: dark spots in the amber acetate, from two crossed triangle waves.
            spots = triangle(x_mm * 0.21 + col(d["mottle"])) * triangle(y_mm * 0.27 + col(3.0 * d["mottle"]))
            is_tortoise = col(pick(len(self.frame_rgb), d["colour"]) == self.tortoise)
            dark = clamp((spots - 0.45) * 4.0) * is_tortoise
            rgb = rgb + (rgb_col(np.tile(TORTOISE_DARK_RGB, (len(p), 1))) - rgb) * dark
        shade = col(light.shade(-light.head_dir[:, 2]))
        blend(scene.image, rgb * shade * light.rgb, cover)
