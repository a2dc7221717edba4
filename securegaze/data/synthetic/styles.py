"""Renderer styles: named presets of the face distribution, so configs and commands say a name.

A style is a :class:`~securegaze.data.synthetic.faces.SyntheticConfig` factory registered here;
``synthetic_style("easy", size=32)`` returns the preset with some fields replaced. A new style (another
face look, another range of poses) is one function and one registration line.
"""

from __future__ import annotations

from dataclasses import replace

from securegaze.data.synthetic.faces import SyntheticConfig
from securegaze.errors import ConfigError
from securegaze.registry import Registry

STYLES: Registry[SyntheticConfig] = Registry("renderer style")


@STYLES.register("standard")
def standard() -> SyntheticConfig:
    """The default distribution: jittered head pose, blur and sensor noise (what the zoo trains on)."""
    return SyntheticConfig()


@STYLES.register("easy")
def easy() -> SyntheticConfig:
    """A fixed frontal head without blur or noise: the eyes are the only varying signal, so a tiny
    CNN learns the gaze in about a hundred steps (the test suite's tiny models)."""
    return SyntheticConfig(head_jitter_deg=(0.0, 0.0, 0.0), blur=(0.0, 0.0), noise=(0.0, 0.0))


@STYLES.register("studio")
def studio() -> SyntheticConfig:
    """Studio portraits, a second look for cross-family zoos: a looser crop (the head at 82-90 % of
    the standard size, more backdrop), rounder faces (half-width 0.86-0.96, half-height 1.00-1.10
    instead of 0.80-0.90 and 1.08-1.20), one key light from the upper left (azimuth -65..-25 deg,
    elevation 20-50 deg, 15-35 % ambient: one side of the face in shadow) and a photo backdrop (a
    palette colour under a spot behind the head, darker corners, mottled cloth). Pose, gaze, blur and
    noise are the standard ranges."""
    return SyntheticConfig(head_scale=(0.82, 0.90), face_width=(0.86, 0.96), face_height=(1.00, 1.10),
                           light_azimuth_deg=(-65.0, -25.0), light_elevation_deg=(20.0, 50.0),
                           ambient=(0.15, 0.35), backdrop="studio")


@STYLES.register("face_centred")
def face_centred() -> SyntheticConfig:
    """The standard faces framed as the edge app's normalisation frames a camera's face: the face
    centre (eye and mouth corners) fixed at the crop centre, the head's x axis horizontal, the head
    turning about that point (:mod:`securegaze.data.synthetic.framing`). The default model trains on
    it. Roll keeps a +-5 deg jitter for the normalisation's landmark error, and the face's size in the
    crop spans 0.90-1.25 of the standard instead of 0.95-1.05: the normalisation scales a face by its
    distance from a head pose fitted to a generic face, so a face of other proportions comes out larger
    or smaller. On the synthetic drive the fitted distance is 6-19 % too long (the renderer's eye to
    mouth distance is ~62 mm against the generic face's 70 mm), which shows the face 1.06-1.19 times
    its true size; people's faces differ from the generic one by about +-10 %. The face centre is
    shifted by up to +-0.08 units (+-2.6 px at 64 px, +-7 mm of face) rather than the standard +-0.03:
    the centre comes from landmarks that move with the face's expression (a smile moves the mouth
    corners), and a model trained on exactly centred faces reads a 2-px shift 1.5 deg off and a 3-px one
    6 deg off."""
    return SyntheticConfig(framing="face", head_scale=(0.90, 1.25), centre_jitter=0.08)


def synthetic_style(name: str, **overrides) -> SyntheticConfig:
    """The registered style ``name`` with ``overrides`` (any :class:`SyntheticConfig` field) applied."""
    config = STYLES.create(name)
    unknown = sorted(set(overrides) - set(config.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"renderer style {name!r}: unknown setting {unknown[0]!r}; expected one of: "
                          f"{', '.join(config.__dataclass_fields__)}")
    return replace(config, **overrides)
