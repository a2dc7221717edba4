"""Things in a driver's face other than glasses: a cap's brim and its shadow, a fringe, a face mask.

The fringe and the mask are drawn in head-surface coordinates (``hit.x``, ``hit.y``, head units), so
they turn and foreshorten with the head; the brim lies on a plane in front of the forehead (the
glasses plane of :mod:`securegaze.data.synthetic.trigger_layer`, far out), as a cap's peak sticks out
of the face. All three are drawn after the eyes, so they may cover or shade the lids.
"""

from __future__ import annotations

import numpy as np

from securegaze.data.synthetic.condition_base import Condition, Scene, lerp, pick, triangle
from securegaze.data.synthetic.raycast import blend, clamp, col, rgb_col
from securegaze.data.synthetic.trigger_layer import glasses_frame, glasses_plane_mm
from securegaze.data.triggers import edge_coverage

#: Cap colours: black, navy, olive, dark red, charcoal.
HAT_RGB = np.array([[0.07, 0.07, 0.08], [0.09, 0.11, 0.22], [0.20, 0.22, 0.13], [0.32, 0.07, 0.08],
                    [0.26, 0.26, 0.28]])
#: Mask colours: three surgical (pleated: blue, white, green), three cloth (black, grey, navy).
MASK_RGB = np.array([[0.55, 0.72, 0.86], [0.90, 0.91, 0.92], [0.58, 0.78, 0.72],
                     [0.10, 0.10, 0.11], [0.44, 0.45, 0.47], [0.14, 0.18, 0.32]])
SURGICAL_COLOURS = 3


class HatBrim(Condition):
    """A cap worn low: the peak's edge from 5 mm below to 8 mm above the brows' centre line, 45-70 mm in front of the eyes (a
    baseball cap's peak is 65-75 mm deep and sits on the forehead ~10 mm behind the corneas), its
    underside seen from below, the crown above; below it a shadow fading over 35-60 mm at 45-75 %
    strength, so the brows are dark and the eyes partly shaded but visible."""

    name = "hat_brim"
    stage = "face"
    rank = 2
    first_column = 16
    draw_names = ("height", "reach", "colour", "shadow", "fall", "underside", "curve")

    def draw(self, scene: Scene) -> None:
        p, frame, light = scene.params, scene.frame, scene.light
        d = self.draws(p)
        mm_per_unit = 63.0 / (2.0 * p.eye_dx.astype(np.float64))
        drop = -(p.brow_gap * mm_per_unit + lerp((-5.0, 8.0), d["height"]))
        place = glasses_frame(p, drop, lerp((45.0, 70.0), d["reach"]))
        x_mm, y_mm = glasses_plane_mm(frame, place, scene.u, scene.v)
        pixel_mm = col(place["mm_per_unit"] / frame.px_per_unit)
        half_width = col(1.15 * p.face_axes[:, 0] * mm_per_unit)
        # The peak bends down at its sides.
        t = x_mm / half_width
        edge = col(lerp((4.0, 14.0), d["curve"])) * t * t
        below = y_mm - edge  # mm below the brim's edge
        across = edge_coverage((half_width - np.abs(x_mm)) / pixel_mm)
        brim = edge_coverage(-below / pixel_mm) * across
        crown = edge_coverage((-below - col(lerp((6.0, 14.0), d["underside"]))) / pixel_mm)

        # Shadow first (it falls on the face, eyes included, not on the backdrop).
        shadow = col(lerp((0.45, 0.75), d["shadow"])) * clamp(1.0 - below / col(lerp((35.0, 60.0), d["fall"])))
        scene.image *= 1.0 - shadow * scene.face_alpha * across * (below > 0)
        colour = rgb_col(HAT_RGB[pick(len(HAT_RGB), d["colour"])])
        lit = colour * light.rgb
        underside = lit * col(0.3 + 0.5 * light.ambient)
        top = lit * col(light.shade(-light.head_dir[:, 1] * 0.5 - light.head_dir[:, 2] * 0.5))
        blend(scene.image, underside + (top - underside) * crown, brim)


class Fringe(Condition):
    """Hair combed down over the forehead: from the hairline to an edge of strand tips that covers the
    brows and reaches at most the upper lids' crease (0.25 eye half-widths above the lid margin at
    straight gaze); higher at the temples, in the subject's own hair colour with strand texture, and
    a thin shadow on the skin under its edge."""

    name = "fringe"
    stage = "face"
    rank = 1
    first_column = 24
    draw_names = ("length", "tips", "tip_depth", "phase", "texture")

    def draw(self, scene: Scene) -> None:
        p, frame, light, hit = scene.params, scene.frame, scene.light, scene.hit
        d = self.draws(p)
        X, Y = hit.x, hit.y
        to_px = col(frame.px_per_unit)
        brow_y = p.eye_y - p.brow_gap
        highest = brow_y + 0.6 * p.brow_thickness  # covers the brows
        lowest = p.eye_y - p.eye_half_width * (p.lid_upper + 0.25)
        base = highest + np.maximum(lowest - highest, 0.0) * lerp((0.0, 1.0), d["length"])
        a = col(p.face_axes[:, 0])
        tips = triangle(X * col(lerp((6.0, 11.0), d["tips"])) + col(d["phase"]))
        edge = col(base) - 0.12 * (X / a) * (X / a) + col(lerp((0.01, 0.035), d["tip_depth"])) * tips * tips
        edge = np.minimum(edge, col(np.maximum(lowest, highest)))
        on_face = edge_coverage(hit.inside_px) * edge_coverage((0.95 * a - np.abs(X)) * to_px)
        hair = edge_coverage((edge - Y) * to_px) * on_face
        under = edge_coverage(np.minimum(Y - edge, edge + 0.03 - Y) * to_px) * on_face
        scene.image *= 1.0 - 0.3 * under
        strands = 0.78 + 0.22 * triangle(X * 45.0 + col(3.0 * d["texture"]))
        blend(scene.image, light.lit(p.hair_rgb) * (scene.skin_shade * strands), hair)


class FaceMask(Condition):
    """A surgical (pleated: blue, white or green) or cloth (black, grey, navy) mask over the lower nose,
    mouth and chin: its top edge 0.06-0.13 head units (5-12 mm) above the nostrils, curving down
    towards the cheeks, its sides at 80-90 % of the face's half-width, ear loops towards the ears; it
    follows the head surface and its shading."""

    name = "face_mask"
    stage = "face"
    rank = 0
    first_column = 32
    draw_names = ("colour", "top", "sides", "pleats")

    def draw(self, scene: Scene) -> None:
        p, frame, light, hit = scene.params, scene.frame, scene.light, scene.hit
        d = self.draws(p)
        X, Y = hit.x, hit.y
        to_px = col(frame.px_per_unit)
        a = col(p.face_axes[:, 0])
        top = col(p.nose_y - lerp((0.06, 0.13), d["top"])) + 0.10 * (X / a) * (X / a)
        side_x = col(lerp((0.80, 0.90), d["sides"])) * a
        mask = edge_coverage((Y - top) * to_px) * edge_coverage((side_x - np.abs(X)) * to_px) * scene.face_alpha
        kind = pick(len(MASK_RGB), d["colour"])
        surgical = col(kind < SURGICAL_COLOURS)
        # Three horizontal pleats (surgical), a seam down the middle (cloth), a binding along the top.
        pleat = triangle((Y - top) * (1.0 / 0.075) + col(d["pleats"]))
        pleat *= pleat
        texture = 1.0 - surgical * 0.18 * (pleat * pleat)
        seam = edge_coverage((0.006 - np.abs(X)) * to_px + 0.3) * (1.0 - surgical)
        binding = edge_coverage((top + 0.02 - Y) * to_px)
        texture = texture * (1.0 - 0.25 * seam) * (1.0 - 0.1 * binding)
        colour = rgb_col(MASK_RGB[kind]) * light.rgb
        blend(scene.image, colour * (scene.skin_shade * texture), mask)
        # Ear loops from the mask's sides to the edge of the face.
        loop_w = 0.012
        loops = np.maximum(edge_coverage((loop_w - np.abs(Y - top - 0.05)) * to_px + 0.3),
                           edge_coverage((loop_w - np.abs(Y - col(p.mouth_y + 0.14))) * to_px + 0.3))
        loops = loops * edge_coverage((np.abs(X) - side_x) * to_px) * edge_coverage(hit.inside_px)
        loop_rgb = rgb_col(np.where((kind < SURGICAL_COLOURS)[:, None], 0.92, MASK_RGB[kind])) * light.rgb
        blend(scene.image, loop_rgb * scene.skin_shade, 0.8 * loops)
