"""A near-infrared night camera as a cabin condition.

Driver-monitoring cameras light the face with 850 or 940 nm LEDs and see through a filter that
blocks visible light, so at night the image is monochrome and lit almost only by the illuminator
beside the lens. In near infrared, melanin absorbs little: skin of every tone is bright and even
(reflectance ~0.5-0.7, the differences between skin tones shrink), brown irises turn light grey, the
sclera looks like the skin, lips lose their colour and dark hair turns mid-grey. An illuminator on
the camera's axis makes the retina retro-reflect through the pupil, which then glows (the
*bright-pupil* eye trackers' cue); one set off the axis leaves the pupil black (*dark pupil*). Little
light reaches the sensor, so it runs at high gain: dark, noisy images. Passing cars' headlights
(which emit near infrared too) sweep bright bands over the cabin.

Per-sample parameters (unit draws, see :func:`securegaze.data.synthetic.conditions.with_condition_draws`):
``headlight`` (< :data:`HEADLIGHT_SHARE`: a sweep is in the frame), ``headlight_position`` (0..1:
the band's centre from one side of the image to the other along the band's normal, so a video
renderer moves it over time), ``headlight_angle`` (0..1: the band's direction, 0..180 deg),
``headlight_width``, ``headlight_strength``, ``pupil`` (< 0.5: bright pupil), ``pupil_glow``,
``exposure``, ``noise`` and the albedo jitters.
"""

from __future__ import annotations

import math

import numpy as np

from securegaze.data.synthetic.condition_base import Condition, Look, Scene, bump, cos_sin, lerp
from securegaze.data.synthetic.raycast import col

#: Share of faces with a headlight sweep in the frame.
HEADLIGHT_SHARE = 0.35
#: Illuminator position: within ~8 deg of the camera axis (LEDs around the lens seen from ~0.6 m).
LIGHT_AZIMUTH_DEG = (-8.0, 8.0)
LIGHT_ELEVATION_DEG = (-4.0, 10.0)
#: Share of undirected light (the cabin's reflections of the illuminator).
AMBIENT = (0.08, 0.20)
#: Overall exposure (the face's brightness relative to a daylight render) and sensor noise std
#: (fraction of full scale; the daylight default is 0.004-0.018).
EXPOSURE = (0.70, 1.00)
NOISE_STD = (0.025, 0.05)
#: Pupil brightness of a bright-pupil image and of a dark-pupil image.
BRIGHT_PUPIL = (0.70, 0.95)
DARK_PUPIL = 0.02


class NightInfrared(Condition):
    """The night camera: grey, NIR albedos, an on-axis illuminator, bright or dark pupils, high
    gain and noise, and now and then a headlight sweep."""

    name = "night_ir"
    stage = "camera"
    rank = 0
    first_column = 40
    draw_names = ("headlight", "headlight_position", "headlight_angle", "headlight_width", "headlight_strength",
                  "pupil", "pupil_glow", "exposure", "noise", "skin", "iris", "sclera", "hair", "background",
                  "light_azimuth", "light_elevation", "ambient")

    def prepare(self, look: Look) -> None:
        p = look.params
        d = self.draws(p)
        n = len(p)

        def grey(values: np.ndarray) -> np.ndarray:
            return np.repeat(np.asarray(values, np.float64)[:, None], 3, 1)

        skin = 0.50 + 0.22 * p.skin_rgb.mean(1) + lerp((-0.04, 0.04), d["skin"])
        hair = 0.12 + 0.45 * p.hair_rgb.mean(1) + lerp((-0.03, 0.05), d["hair"])
        background = p.background_rgb.mean(2, keepdims=True) * lerp((0.10, 0.30), d["background"])[:, None, None]
        angles = np.radians(np.stack([lerp(LIGHT_AZIMUTH_DEG, d["light_azimuth"]),
                                      lerp(LIGHT_ELEVATION_DEG, d["light_elevation"])], -1))
        bright = d["pupil"] < 0.5
        pupil = np.where(bright, lerp(BRIGHT_PUPIL, d["pupil_glow"]), DARK_PUPIL)
        look.params = p.replace(
            skin_rgb=grey(skin), iris_rgb=grey(lerp((0.38, 0.58), d["iris"])),
            sclera_rgb=grey(np.minimum(skin * lerp((0.98, 1.12), d["sclera"]), 0.95)), lip_rgb=grey(0.93 * skin),
            hair_rgb=grey(hair), brow_rgb=grey(0.8 * hair), background_rgb=np.repeat(background, 3, 2),
            light_angles=angles, ambient=lerp(AMBIENT, d["ambient"]), light_rgb=np.ones((n, 3)),
            noise_std=lerp(NOISE_STD, d["noise"]))
        look.pupil_rgb = grey(pupil)
        look.mono = True
        look.infrared = True

    def draw(self, scene: Scene) -> None:
        d = self.draws(scene.params)
        image = scene.image
        grey = image.mean(axis=0) * col(lerp(EXPOSURE, d["exposure"]))
        # Headlight sweep: a soft band (screen-blended) across the frame.
        cos_a, sin_a = cos_sin(lerp((0.0, math.pi), d["headlight_angle"]))
        offset = lerp((-1.5, 1.5), d["headlight_position"])
        across = scene.u * col(cos_a) + scene.v * col(sin_a) - col(offset)
        strength = lerp((0.35, 0.8), d["headlight_strength"]) * (d["headlight"] < HEADLIGHT_SHARE)
        band = bump(across / col(lerp((0.15, 0.45), d["headlight_width"]))) * col(strength)
        grey = 1.0 - (1.0 - grey) * (1.0 - band)
        image[...] = grey[None]


def headlight_sweep(t: float, every_s: float, duration_s: float) -> dict[str, float]:
    """``night_ir`` draws for a video frame at time ``t`` s (for :func:`with_condition_draws`): a
    headlight band crossing the image from one side to the other for ``duration_s`` every
    ``every_s`` seconds, none in between."""
    phase = (t % every_s) / duration_s
    if phase >= 1.0:
        return {"headlight": 1.0}
    return {"headlight": 0.0, "headlight_position": phase}
