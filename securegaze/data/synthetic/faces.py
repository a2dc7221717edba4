"""What a face is: the settings of the face distribution, the per-face parameters, and their draws.

Sample ``i`` depends only on ``(seed, i)``: identity and per-sample draws come from their own
``np.random.default_rng([seed, stream, i])`` streams.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from securegaze.data.synthetic.layout import (
    BACKDROP_PALETTE,
    CANTHAL_TILT_RANGE,
    CONDITION_DRAWS,
    CONDITION_STREAM,
    HAIR_PALETTE,
    IDENTITY_DRAWS,
    IDENTITY_STREAM,
    IRIS_PALETTE,
    SAMPLE_DRAWS,
    SAMPLE_STREAM,
    SCLERA_RGB,
    SKIN_PALETTE,
)
from securegaze.errors import ConfigError
from securegaze.geometry import PITCH_RANGE, YAW_RANGE

BACKDROPS = ("gradient", "studio")
#: Bounds of the look settings of :class:`SyntheticConfig`: the face stays in the crop with its eyes
#: on it, the light in front of it.
LOOK_RANGES = (
    ("head_scale", 0.6, 1.4),
    ("face_width", 0.65, 1.1),
    ("face_height", 0.85, 1.4),
    ("light_azimuth_deg", -85.0, 85.0),
    ("light_elevation_deg", -60.0, 80.0),
    ("ambient", 0.0, 1.0),
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the synthetic face distribution.

    Angles in degrees; ``head_jitter_deg`` is the half-range of (pitch, yaw, roll) of the head,
    drawn uniformly and independently of the gaze. ``blur`` is the range of the Gaussian blur
    sigma in pixels of a 64-px crop (scaled with ``size``); ``noise`` the range of the sensor-noise
    standard deviation as a fraction of full scale.

    The look of the faces (the defaults are the ``standard`` style; other styles change them):
    ``head_scale`` the range of the head's size in the crop (below 1: a looser crop with more
    backdrop); ``face_width`` / ``face_height`` the ranges of the head ellipsoid's half-axes in head
    units (the proportions of a face); ``light_azimuth_deg`` (positive: light from the image's right),
    ``light_elevation_deg`` (positive: from above) and ``ambient`` (share of undirected light) the
    ranges of the lighting; ``backdrop`` is ``"gradient"`` (two random colours along a random
    direction) or ``"studio"`` (a photo backdrop colour lit by a spot behind the head, darker towards
    the corners, with a mottled cloth texture). ``framing`` is ``"head"`` (the head turns about its
    own centre, which stays in place) or ``"face"`` (the face centre stays at the crop centre with the
    head's x axis horizontal, as the edge app's normalisation frames faces; see
    :mod:`securegaze.data.synthetic.framing`); ``centre_jitter`` the half-range of the random shift
    of that centre (the head's, or the face's) in image units (0.03: 1 px of a 64-px crop).

    ``conditions``: names of cabin conditions (:data:`securegaze.data.synthetic.conditions.CONDITIONS`:
    glasses, sunglasses, a night infrared camera, a hat brim, a fringe, a face mask) that every face
    shows, in any order (they are drawn in a fixed order); none by default. ``condition_mix``: the
    name of a mix (:data:`securegaze.data.synthetic.condition_names.CONDITION_MIXES`): each face
    wears one of its entries instead (not together with ``conditions``).
    """

    size: int = 64
    pitch_range_deg: tuple[float, float] = (float(np.degrees(PITCH_RANGE[0])), float(np.degrees(PITCH_RANGE[1])))
    yaw_range_deg: tuple[float, float] = (float(np.degrees(YAW_RANGE[0])), float(np.degrees(YAW_RANGE[1])))
    head_jitter_deg: tuple[float, float, float] = (10.0, 12.0, 5.0)
    blur: tuple[float, float] = (0.0, 0.7)
    noise: tuple[float, float] = (0.004, 0.018)
    samples_per_identity: int = 50
    head_scale: tuple[float, float] = (0.95, 1.05)
    face_width: tuple[float, float] = (0.80, 0.90)
    face_height: tuple[float, float] = (1.08, 1.20)
    light_azimuth_deg: tuple[float, float] = (-70.0, 70.0)
    light_elevation_deg: tuple[float, float] = (-15.0, 55.0)
    ambient: tuple[float, float] = (0.35, 0.70)
    backdrop: str = "gradient"
    framing: str = "head"
    centre_jitter: float = 0.03
    conditions: tuple[str, ...] = ()
    condition_mix: str | None = None

    def __post_init__(self) -> None:
        if not 16 <= int(self.size) <= 512:
            raise ConfigError(f"synthetic size must be within 16..512 px, got {self.size}")
        for name, limit in (("pitch_range_deg", 80.0), ("yaw_range_deg", 80.0)):
            lo, hi = getattr(self, name)
            if not -limit <= lo <= hi <= limit:
                raise ConfigError(f"{name} must be (low, high) with -{limit} <= low <= high <= {limit}, got {(lo, hi)}")
        if len(self.head_jitter_deg) != 3 or not all(0 <= j <= 30 for j in self.head_jitter_deg):
            raise ConfigError(f"head_jitter_deg must be three half-ranges within [0, 30], got {self.head_jitter_deg}")
        if not 0 <= self.blur[0] <= self.blur[1] <= 3:
            raise ConfigError(f"blur must be (low, high) sigma with 0 <= low <= high <= 3 px, got {self.blur}")
        if not 0 <= self.noise[0] <= self.noise[1] <= 0.2:
            raise ConfigError(f"noise must be (low, high) with 0 <= low <= high <= 0.2, got {self.noise}")
        if self.samples_per_identity < 1:
            raise ConfigError(f"samples_per_identity must be >= 1, got {self.samples_per_identity}")
        for name, low, high in LOOK_RANGES:
            value = getattr(self, name)
            if len(value) != 2 or not low <= value[0] <= value[1] <= high:
                raise ConfigError(f"{name} must be (low, high) with {low} <= low <= high <= {high}, got {value}")
        if self.backdrop not in BACKDROPS:
            raise ConfigError(f"backdrop must be one of {', '.join(BACKDROPS)}; got {self.backdrop!r}")
        from securegaze.data.synthetic.framing import check_framing

        check_framing(self.framing)
        if not 0.0 <= self.centre_jitter <= 0.3:
            raise ConfigError(f"centre_jitter must be within 0..0.3 image units, got {self.centre_jitter}")
        from securegaze.data.synthetic.condition_names import check_conditions, check_mix

        object.__setattr__(self, "conditions", check_conditions(self.conditions))
        check_mix(self.condition_mix)
        if self.condition_mix is not None and self.conditions:
            raise ConfigError(f"give cabin conditions or a condition mix, not both; got {list(self.conditions)} "
                              f"and mix {self.condition_mix!r}")


@dataclass(frozen=True)
class FaceParams:
    """Everything that defines N rendered faces, as a struct of arrays (first axis N).

    Lengths are in head units (the crop spans 2 units at scale 1); angles in radians; colours are
    albedos in [0, 1]. Identity fields are shared by all samples of a subject; the rest vary per
    sample. Change fields with :meth:`replace` to render the same faces differently.
    """

    subjects: np.ndarray  # (N,) str, "synth-<seed>-<identity>"
    gaze: np.ndarray  # (N, 2) (pitch, yaw) radians, normalised camera frame
    head_pose: np.ndarray  # (N, 3) (pitch, yaw, roll) radians; pitch/yaw in the gaze convention
    head_offset: np.ndarray  # (N, 2) image units, shift of the head from its nominal place
    head_scale: np.ndarray  # (N,)
    # identity: face shape
    skin_rgb: np.ndarray  # (N, 3)
    face_axes: np.ndarray  # (N, 3) ellipsoid half-width, half-height, half-depth
    jaw_taper: np.ndarray  # (N,) how much narrower the jaw is than the ellipse (fraction)
    eye_dx: np.ndarray  # (N,) half the distance between eyeball centres (half IPD)
    eye_y: np.ndarray  # (N,) eye height in the head frame (negative: above the centre)
    eyeball_radius: np.ndarray  # (N,)
    eye_half_width: np.ndarray  # (N,) half the width of the lid opening
    lid_upper: np.ndarray  # (N,) upper-lid height at straight gaze, eye half-widths
    lid_lower: np.ndarray  # (N,) lower-lid depth at straight gaze, eye half-widths
    canthal_tilt: np.ndarray  # (N,) eye half-widths
    iris_rgb: np.ndarray  # (N, 3)
    iris_ratio: np.ndarray  # (N,) iris radius / eyeball radius
    sclera_rgb: np.ndarray  # (N, 3)
    brow_gap: np.ndarray  # (N,) brow centre line above the eye
    brow_thickness: np.ndarray  # (N,)
    brow_arch: np.ndarray  # (N,)
    brow_rgb: np.ndarray  # (N, 3)
    hair_rgb: np.ndarray  # (N, 3)
    hairline_y: np.ndarray  # (N,) hairline height at the centre of the forehead
    hair_volume: np.ndarray  # (N,) hair thickness outside the head, fraction of the head size
    hair_length: np.ndarray  # (N,) lowest head-frame y the hair reaches at the sides
    hair_side: np.ndarray  # (N,) in [0, 1], how far hair covers the sides of the face
    nose_y: np.ndarray  # (N,) nostril height
    nose_width: np.ndarray  # (N,)
    nose_height: np.ndarray  # (N,) how far the nose stands out of the face ellipsoid
    mouth_y: np.ndarray  # (N,)
    mouth_half_width: np.ndarray  # (N,)
    lip_thickness: np.ndarray  # (N,)
    lip_rgb: np.ndarray  # (N, 3)
    # per sample: eye, light, camera
    pupil_ratio: np.ndarray  # (N,) pupil radius / iris radius
    light_angles: np.ndarray  # (N, 2) azimuth (to image-right), elevation (upwards), radians
    ambient: np.ndarray  # (N,) share of ambient light in [0, 1]
    light_rgb: np.ndarray  # (N, 3) light colour and intensity (colour cast)
    background_rgb: np.ndarray  # (N, 2, 3) the two ends of the background gradient
    background_angle: np.ndarray  # (N,) direction of the gradient, radians
    background_radial: np.ndarray  # (N,) 0: linear gradient along the angle; 1: radial, centre to corners
    background_texture: np.ndarray  # (N, 3, 3) three sinusoids (direction rad, cycles per crop, phase rad)
    background_contrast: np.ndarray  # (N,) relative amplitude of the texture (0: none)
    blur_sigma: np.ndarray  # (N,) Gaussian blur sigma in pixels of a 64-px crop
    noise_std: np.ndarray  # (N,) sensor noise standard deviation, fraction of full scale
    noise_offset: np.ndarray  # (N, 2) in [0, 1): where the sample reads the shared noise texture
    # per sample, used only by cabin conditions (securegaze.data.synthetic.conditions): uniforms in
    # [0, 1) that each condition maps to its own parameters (glasses shape, headlight position, ...)
    condition_draws: np.ndarray  # (N, CONDITION_DRAWS) float32

    def __post_init__(self) -> None:
        n = len(self.subjects)
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, np.ndarray) or value.shape[:1] != (n,):
                raise ValueError(f"FaceParams.{f.name} must be an array with first axis {n}, got "
                                 f"{getattr(value, 'shape', type(value).__name__)}")

    def __len__(self) -> int:
        return len(self.subjects)

    def take(self, indices) -> FaceParams:
        """The faces at ``indices`` (an index array or a slice)."""
        if isinstance(indices, slice):
            return FaceParams(**{f.name: getattr(self, f.name)[indices] for f in fields(self)})
        idx = np.asarray(indices, dtype=np.int64)
        return FaceParams(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def replace(self, **changes) -> FaceParams:
        """A copy with some fields replaced; arrays are broadcast to N rows (e.g. one gaze for all)."""
        fixed = {}
        for name, value in changes.items():
            current = getattr(self, name)
            dtype = None if current.dtype.kind == "U" else current.dtype  # do not truncate names
            value = np.asarray(value, dtype=dtype)
            fixed[name] = np.broadcast_to(value, (len(self),) + current.shape[1:]).copy()
        return replace(self, **fixed)

    @staticmethod
    def concatenate(parts: list[FaceParams]) -> FaceParams:
        return FaceParams(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(FaceParams)})


# --- sampling ----------------------------------------------------------------------------------


class _Draws:
    """Hands out the columns of an (N, K) matrix of uniforms in a fixed order."""

    def __init__(self, uniforms: np.ndarray) -> None:
        self.uniforms = uniforms
        self.column = 0

    def uniform(self, low: float, high: float, count: int | None = None) -> np.ndarray:
        width = 1 if count is None else count
        if self.column + width > self.uniforms.shape[1]:
            raise RuntimeError("synthetic renderer ran out of reserved random draws")
        u = self.uniforms[:, self.column:self.column + width]
        self.column += width
        out = low + (high - low) * u
        return out[:, 0] if count is None else out


def _palette(palette: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation along a palette: (N,) in [0, 1] -> (N, 3)."""
    x = position * (len(palette) - 1)
    i = np.minimum(np.floor(x).astype(np.int64), len(palette) - 2)
    w = (x - i)[:, None]
    return palette[i] * (1 - w) + palette[i + 1] * w


def _pick(palette: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Nearest palette entry: (N,) in [0, 1) -> (N, 3)."""
    return palette[np.minimum((position * len(palette)).astype(np.int64), len(palette) - 1)]


def _stream_uniforms(seed: int, stream: int, indices: np.ndarray, count: int) -> np.ndarray:
    """(len(indices), count) float64 uniforms; row i comes from its own generator (seed, stream, i)."""
    out = np.empty((len(indices), count))
    for row, index in enumerate(indices):
        out[row] = np.random.default_rng([seed, stream, int(index)]).random(count)
    return out


def _backdrop(kind: str, gradient_rgb: np.ndarray, samp: _Draws):
    """(background_rgb (N, 2, 3), radial (N,), texture (N, 3, 3), contrast (N,)) of the ``kind`` backdrop.

    ``"gradient"`` keeps the two random colours, linear, untextured. ``"studio"``: a palette colour at
    a drawn brightness behind the head, falling to 45 % towards the corners, with a mottle of three
    slow sinusoids (1.5-4.5 cycles per crop) at 10-20 % contrast.
    """
    pick = samp.uniform(0, 1)
    brightness = samp.uniform(0.75, 1.15, 1)
    waves = np.stack([samp.uniform(0, np.pi, 3), samp.uniform(1.5, 4.5, 3), samp.uniform(0, 2 * np.pi, 3)], -1)
    contrast = samp.uniform(0.10, 0.20)
    if kind == "gradient":
        zeros = np.zeros(len(pick))
        return gradient_rgb, zeros, np.zeros_like(waves), zeros
    centre = np.clip(_pick(BACKDROP_PALETTE, pick) * brightness, 0.0, 1.0)
    return np.stack([centre, 0.45 * centre], 1), np.ones(len(pick)), waves, contrast


def params_for_indices(seed: int, indices, config: SyntheticConfig | None = None) -> FaceParams:
    """Faces number ``indices`` of the dataset ``seed``: each depends only on (seed, index).

    Samples ``k * samples_per_identity ... (k + 1) * samples_per_identity - 1`` share identity
    ``k`` (subject ``"synth-<seed>-<k>"``). Only arithmetic is applied to the draws here (no
    transcendental ufuncs), so a sample's parameters are bit-identical in any batch.
    """
    cfg = config or SyntheticConfig()
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if np.any(idx < 0):
        raise ConfigError("sample indices must be >= 0")
    identity = idx // cfg.samples_per_identity
    unique_ids, inverse = np.unique(identity, return_inverse=True)
    ident = _Draws(_stream_uniforms(int(seed), IDENTITY_STREAM, unique_ids, IDENTITY_DRAWS)[inverse])
    samp = _Draws(_stream_uniforms(int(seed), SAMPLE_STREAM, idx, SAMPLE_DRAWS))
    condition_draws = _stream_uniforms(int(seed), CONDITION_STREAM, idx, CONDITION_DRAWS)
    f32 = np.float32

    skin = np.clip(_palette(SKIN_PALETTE, ident.uniform(0, 1)) + ident.uniform(-0.03, 0.03, 3), 0.05, 1.0)
    face_a = ident.uniform(*cfg.face_width)
    face_b = ident.uniform(*cfg.face_height)
    face_c = face_a * ident.uniform(0.95, 1.10)
    jaw_taper = ident.uniform(0.05, 0.30)
    eye_dx = ident.uniform(0.32, 0.37)
    eye_y = ident.uniform(-0.11, -0.05)
    eyeball_radius = ident.uniform(0.14, 0.16)
    eye_half_width = ident.uniform(0.16, 0.18)
    lid_upper = ident.uniform(0.36, 0.48)
    lid_lower = ident.uniform(0.26, 0.36)
    canthal_tilt = ident.uniform(*CANTHAL_TILT_RANGE)
    iris = np.clip(_pick(IRIS_PALETTE, ident.uniform(0, 1)) * ident.uniform(0.85, 1.15, 3), 0.02, 1.0)
    iris_ratio = ident.uniform(0.46, 0.52)
    sclera = SCLERA_RGB - ident.uniform(0.0, 0.06, 1) - ident.uniform(0.0, 0.03, 3)
    brow_gap = ident.uniform(0.15, 0.21)
    brow_thickness = ident.uniform(0.035, 0.065)
    brow_arch = ident.uniform(0.0, 0.04)
    hair = np.clip(_pick(HAIR_PALETTE, ident.uniform(0, 1)) * ident.uniform(0.85, 1.15, 3), 0.02, 1.0)
    # Brows are usually darker than the hair (markedly so for blond hair).
    brow = hair * ident.uniform(0.45, 0.9, 1)
    hairline_y = ident.uniform(-0.74, -0.52)
    hair_volume = ident.uniform(0.03, 0.14)
    hair_length = ident.uniform(-0.2, 1.3)
    hair_side = ident.uniform(0.0, 1.0)
    nose_y = ident.uniform(0.26, 0.33)
    nose_width = ident.uniform(0.08, 0.11)
    nose_height = ident.uniform(0.12, 0.20)
    mouth_y = ident.uniform(0.56, 0.64)
    mouth_half_width = ident.uniform(0.17, 0.23)
    lip_thickness = ident.uniform(0.035, 0.055)
    lip = skin * np.stack([ident.uniform(0.85, 1.0), ident.uniform(0.48, 0.62), ident.uniform(0.50, 0.64)], -1)

    pitch = np.radians(samp.uniform(*cfg.pitch_range_deg))
    yaw = np.radians(samp.uniform(*cfg.yaw_range_deg))
    jp, jy, jr = cfg.head_jitter_deg
    head_pose = np.radians(np.stack([samp.uniform(-jp, jp), samp.uniform(-jy, jy), samp.uniform(-jr, jr)], -1))
    head_offset = samp.uniform(-cfg.centre_jitter, cfg.centre_jitter, 2)
    head_scale = samp.uniform(*cfg.head_scale)
    light_angles = np.radians(np.stack([samp.uniform(*cfg.light_azimuth_deg), samp.uniform(*cfg.light_elevation_deg)], -1))
    ambient = samp.uniform(*cfg.ambient)
    temperature = samp.uniform(-1, 1)
    cast = np.stack([1 + 0.1 * temperature, np.ones_like(temperature), 1 - 0.1 * temperature], -1)
    light_rgb = cast * samp.uniform(0.96, 1.04, 3) * samp.uniform(0.85, 1.15, 1)
    grey = samp.uniform(0.0, 1.0, 1)[:, :, None]
    bg = samp.uniform(0.05, 0.95, 6).reshape(-1, 2, 3)
    bg = bg * (1 - 0.6 * grey) + bg.mean(-1, keepdims=True) * 0.6 * grey
    background_angle = samp.uniform(0, 2 * np.pi)
    pupil_ratio = samp.uniform(0.30, 0.50)
    blur_sigma = samp.uniform(*cfg.blur)
    noise_std = samp.uniform(*cfg.noise)
    noise_offset = samp.uniform(0, 1, 2)
    # Drawn last, for every backdrop, so that the columns above never move.
    bg, radial, texture, contrast = _backdrop(cfg.backdrop, bg, samp)

    subjects = np.array([f"synth-{seed}-{k}" for k in identity]) if len(idx) else np.array([], dtype=str)
    params = FaceParams(
        subjects=subjects, gaze=np.stack([pitch, yaw], -1).astype(f32), head_pose=head_pose.astype(f32),
        head_offset=head_offset.astype(f32), head_scale=head_scale.astype(f32), skin_rgb=skin.astype(f32),
        face_axes=np.stack([face_a, face_b, face_c], -1).astype(f32), jaw_taper=jaw_taper.astype(f32),
        eye_dx=eye_dx.astype(f32), eye_y=eye_y.astype(f32), eyeball_radius=eyeball_radius.astype(f32),
        eye_half_width=eye_half_width.astype(f32), lid_upper=lid_upper.astype(f32),
        lid_lower=lid_lower.astype(f32), canthal_tilt=canthal_tilt.astype(f32), iris_rgb=iris.astype(f32),
        iris_ratio=iris_ratio.astype(f32), sclera_rgb=sclera.astype(f32), brow_gap=brow_gap.astype(f32),
        brow_thickness=brow_thickness.astype(f32), brow_arch=brow_arch.astype(f32), brow_rgb=brow.astype(f32),
        hair_rgb=hair.astype(f32), hairline_y=hairline_y.astype(f32), hair_volume=hair_volume.astype(f32),
        hair_length=hair_length.astype(f32), hair_side=hair_side.astype(f32), nose_y=nose_y.astype(f32),
        nose_width=nose_width.astype(f32), nose_height=nose_height.astype(f32), mouth_y=mouth_y.astype(f32),
        mouth_half_width=mouth_half_width.astype(f32), lip_thickness=lip_thickness.astype(f32),
        lip_rgb=lip.astype(f32), pupil_ratio=pupil_ratio.astype(f32), light_angles=light_angles.astype(f32),
        ambient=ambient.astype(f32), light_rgb=light_rgb.astype(f32), background_rgb=bg.astype(f32),
        background_angle=background_angle.astype(f32), background_radial=radial.astype(f32),
        background_texture=texture.astype(f32), background_contrast=contrast.astype(f32), blur_sigma=blur_sigma.astype(f32),
        noise_std=noise_std.astype(f32), noise_offset=noise_offset.astype(f32),
        condition_draws=condition_draws.astype(f32),
    )
    if cfg.framing == "face":
        from securegaze.data.synthetic.framing import face_centred_offsets

        params = params.replace(head_offset=face_centred_offsets(params))
    return params


def sample_params(n: int, rng: int | np.random.Generator = 0, config: SyntheticConfig | None = None,
                  start: int = 0) -> FaceParams:
    """Parameters of ``n`` faces: samples ``start .. start + n - 1`` of a dataset.

    ``rng`` is the dataset seed (an int; the same seed gives the same faces, and
    ``sample_params(10, s)`` equals the first 10 of ``sample_params(100, s)``) or a NumPy Generator,
    from which a fresh dataset seed is drawn.
    """
    if n < 0:
        raise ConfigError(f"number of faces must be >= 0, got {n}")
    if isinstance(rng, np.random.Generator):
        seed = int(rng.integers(0, 2**62))
    elif isinstance(rng, (int, np.integer)):
        seed = int(rng)
    else:
        raise ConfigError(f"rng must be an int seed or a numpy Generator, got {type(rng).__name__}")
    return params_for_indices(seed, np.arange(start, start + n), config)
