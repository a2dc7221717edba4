"""Offline synthetic driver faces: normalised face crops with exact gaze labels.

The renderer draws what a normalised face crop (MPIIFaceGaze / ETH-XGaze style) shows: the face
fills most of the square, the eyes sit about 40 % of the height from the top. It is a small
orthographic ray caster, vectorised over (N, H, W) with float32 NumPy:

* the head is an ellipsoid; every pixel's ray is intersected with it, and all facial features
  (brows, nose, mouth, hairline, eyelids, triggers) are drawn in **head-surface coordinates**, so
  they rotate and foreshorten with head pose for free;
* each eye is a 3-D eyeball behind the lids: a pixel shows iris or pupil when the eyeball's
  surface normal there lies within the iris (pupil) angle of the gaze vector, so the iris moves
  and foreshortens physically; the eyelid opening is an almond between two curves whose upper
  (and slightly the lower) lid follow the eye's pitch in the head;
* head pose is drawn independently of the gaze label; the eye-in-head rotation is whatever makes
  the camera-frame gaze equal the label. A model can therefore only read gaze from the eyes.

Coordinates: image units ``u, v`` run from -1 to 1 across the crop (x right, y down); the head
frame has the same units and axes for a frontal head (z away from the camera), with its origin at
the ellipsoid centre. Gaze and head pose follow :mod:`securegaze.geometry`.

Determinism: sample ``i`` of a dataset depends only on ``(seed, i)`` (its own
``np.random.default_rng([seed, stream, i])``), identities are shared by blocks of
``samples_per_identity`` consecutive samples, and rendering works on fixed-size chunks, so
``render_dataset(10, ...)`` is bit-identical to the first 10 of ``render_dataset(100, ...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from securegaze.data.base import ArrayGazeDataset
from securegaze.data.triggers import ASSUMED_IPD_MM, Trigger, edge_coverage, resolve_trigger
from securegaze.errors import ConfigError
from securegaze.geometry import PITCH_RANGE, YAW_RANGE, pitchyaw_to_rotation, pitchyaw_to_vector, rotation_z
from securegaze.io import atomic_write_bytes

# --- layout of a normalised face crop (image units, crop spans [-1, 1]) ---------------------------

#: Head (ellipsoid) centre in the image. With eyes ~0.08 above it and a half-height of ~1.15 the
#: eyes land ~40 % of the height from the top and the chin near the bottom edge, while the top of
#: the head is cut off, as in ETH-XGaze / MPIIFaceGaze normalised faces.
HEAD_CENTRE_Y = -0.12
#: Eyeball centre behind the skin surface, in eyeball radii: the cornea then bulges ~0.2 radii
#: in front of the lids, and the iris plane sits just behind them.
EYEBALL_DEPTH = 0.8
#: How far the upper / lower lid margins move per unit of iris displacement (re * sin(pitch)):
#: the upper lid tracks the globe closely in down-gaze (lid-eye coordination), the lower lid a little.
LID_UPPER_FOLLOW = 0.5
LID_LOWER_FOLLOW = 0.2
#: Bounds of the lid heights, in eye half-widths: the opening never closes completely.
LID_UPPER_LIMITS = (0.06, 0.8)
LID_LOWER_LIMITS = (0.12, 0.6)
#: Canthal tilt range (eye half-widths; positive: outer corner higher).
CANTHAL_TILT_RANGE = (-0.03, 0.15)
#: Lash line thickness, eye half-widths.
LASH_THICKNESS = 0.12
#: Eye-occluder patch extents in eye half-widths (x: either side; top / bottom of the centre).
#: They enclose every pixel whose colour depends on gaze: the widest lid opening (the almond's
#: skew adds up to ~2 %), the lash line above it and the lower-lid line below it.
OCCLUDER_X = 1.1
OCCLUDER_TOP = LID_UPPER_LIMITS[1] * 1.03 + LASH_THICKNESS + 0.03
OCCLUDER_BOTTOM = LID_LOWER_LIMITS[1] * 1.05 + 0.1
#: Extent of the darker eye socket around each eye, eye half-widths (x either side, y around 0.1 up).
SOCKET_X = 1.3
SOCKET_Y = 1.05
#: Eye window half-extent in image units: the largest eye half-width x scale x the farthest reach
#: of the socket or the occluder's corner (whatever the roll); the eye maths runs only inside.
EYE_WINDOW_HALF = 0.18 * 1.05 * max(SOCKET_X, math.hypot(OCCLUDER_X, OCCLUDER_TOP))
#: Wrap lighting: light reaches a little past the terminator, as subsurface scattering in skin does.
LIGHT_WRAP = 0.25
#: Pixels per rendering chunk: keeps the per-pixel float32 maps in the CPU cache.
CHUNK_PIXELS = 1 << 16
#: Gaussian noise texture shared by all samples; each sample reads it at its own offset.
NOISE_BANK_SIZE = 640
NOISE_BANK_SEED = 0x5EED_0F_FACE

# Draw streams of per-sample generators: np.random.default_rng([seed, stream, index]).
_IDENTITY_STREAM = 1
_SAMPLE_STREAM = 2
# Uniform draws reserved per identity / per sample (more than used, so new draws can be appended
# without changing existing datasets).
_IDENTITY_DRAWS = 64
_SAMPLE_DRAWS = 48

# Albedo palettes, linear-ish RGB in [0, 1].
SKIN_PALETTE = np.array([
    [0.96, 0.80, 0.69], [0.90, 0.70, 0.57], [0.80, 0.58, 0.44],
    [0.66, 0.46, 0.32], [0.48, 0.32, 0.22], [0.32, 0.21, 0.15],
])
HAIR_PALETTE = np.array([
    [0.06, 0.05, 0.05], [0.17, 0.11, 0.07], [0.33, 0.21, 0.12],
    [0.50, 0.25, 0.11], [0.76, 0.62, 0.38], [0.60, 0.58, 0.56],
])
IRIS_PALETTE = np.array([
    [0.20, 0.11, 0.06], [0.36, 0.21, 0.09], [0.42, 0.34, 0.16],
    [0.27, 0.38, 0.24], [0.28, 0.43, 0.60], [0.42, 0.47, 0.52],
])
SCLERA_RGB = np.array([0.94, 0.91, 0.87])
PUPIL_RGB = np.array([0.03, 0.03, 0.035], dtype=np.float32)
LASH_RGB = np.array([0.06, 0.045, 0.04], dtype=np.float32)
#: Inner-corner tissue (caruncle) and the shadowed tissue just outside the eyeball's silhouette.
CARUNCLE_RGB = np.array([0.80, 0.50, 0.47], dtype=np.float32)
CORNER_RGB = np.array([0.45, 0.30, 0.28], dtype=np.float32)


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the synthetic face distribution.

    Angles in degrees; ``head_jitter_deg`` is the half-range of (pitch, yaw, roll) of the head,
    drawn uniformly and independently of the gaze. ``blur`` is the range of the Gaussian blur
    sigma in pixels of a 64-px crop (scaled with ``size``); ``noise`` the range of the sensor-noise
    standard deviation as a fraction of full scale.
    """

    size: int = 64
    pitch_range_deg: tuple[float, float] = (float(np.degrees(PITCH_RANGE[0])), float(np.degrees(PITCH_RANGE[1])))
    yaw_range_deg: tuple[float, float] = (float(np.degrees(YAW_RANGE[0])), float(np.degrees(YAW_RANGE[1])))
    head_jitter_deg: tuple[float, float, float] = (10.0, 12.0, 5.0)
    blur: tuple[float, float] = (0.0, 0.7)
    noise: tuple[float, float] = (0.004, 0.018)
    samples_per_identity: int = 50

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
    blur_sigma: np.ndarray  # (N,) Gaussian blur sigma in pixels of a 64-px crop
    noise_std: np.ndarray  # (N,) sensor noise standard deviation, fraction of full scale
    noise_offset: np.ndarray  # (N, 2) in [0, 1): where the sample reads the shared noise texture

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
    ident = _Draws(_stream_uniforms(int(seed), _IDENTITY_STREAM, unique_ids, _IDENTITY_DRAWS)[inverse])
    samp = _Draws(_stream_uniforms(int(seed), _SAMPLE_STREAM, idx, _SAMPLE_DRAWS))
    f32 = np.float32

    skin = np.clip(_palette(SKIN_PALETTE, ident.uniform(0, 1)) + ident.uniform(-0.03, 0.03, 3), 0.05, 1.0)
    face_a = ident.uniform(0.80, 0.90)
    face_b = ident.uniform(1.08, 1.20)
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
    head_offset = samp.uniform(-0.03, 0.03, 2)
    head_scale = samp.uniform(0.95, 1.05)
    light_angles = np.radians(np.stack([samp.uniform(-70, 70), samp.uniform(-15, 55)], -1))
    ambient = samp.uniform(0.35, 0.70)
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

    subjects = np.array([f"synth-{seed}-{k}" for k in identity]) if len(idx) else np.array([], dtype=str)
    return FaceParams(
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
        background_angle=background_angle.astype(f32), blur_sigma=blur_sigma.astype(f32),
        noise_std=noise_std.astype(f32), noise_offset=noise_offset.astype(f32),
    )


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


# --- per-chunk geometry ------------------------------------------------------------------------
#
# Per-pixel maps are (N, H, W) float32, images (3, N, H, W) float32 (channel first, so that a
# per-image colour (3, N, 1, 1) and a per-pixel weight (N, H, W) broadcast without strides).


def _col(values) -> np.ndarray:
    """(N,) -> (N, 1, 1) float32, to broadcast per-image scalars over (N, H, W) maps."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def _rgb_col(values) -> np.ndarray:
    """(N, 3) -> (3, N, 1, 1) float32, to broadcast per-image colours over (3, N, H, W) images."""
    return np.ascontiguousarray(np.asarray(values, dtype=np.float32).T)[:, :, None, None]


def _clamp(x: np.ndarray, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """np.clip for float maps, in place on ``x`` (pass a temporary). Several times faster than
    np.clip, which matters at a few dozen clamps per face."""
    np.maximum(x, low, out=x)
    np.minimum(x, high, out=x)
    return x


def _blend(image: np.ndarray, rgb: np.ndarray, alpha: np.ndarray) -> None:
    """In place: image (3, N, H, W) <- image + alpha * (rgb - image)."""
    image += alpha * (rgb - image)


def _linear_map(coef: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """coef (N, 3) -> coef[:, 0] * u + coef[:, 1] * v + coef[:, 2], one full-size add per pixel.

    ``u`` is (..., 1, W) and ``v`` (..., H, 1): the products stay a row and a column.
    """
    return _col(coef[:, 0]) * u + (_col(coef[:, 1]) * v + _col(coef[:, 2]))


def _surface_z(x: np.ndarray, y: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Depth (negative: towards the camera) of the front of the head ellipsoid at head (x, y)."""
    inside = 1.0 - (x / axes[:, 0]) ** 2 - (y / axes[:, 1]) ** 2
    return -axes[:, 2] * np.sqrt(np.maximum(inside, 1e-3))


@dataclass(frozen=True)
class _Frame:
    """Per-image camera <-> head transform of one chunk: p_cam = scale * R @ p_head + offset."""

    rotation: np.ndarray  # (N, 3, 3) float64, camera from head
    scale: np.ndarray  # (N,)
    offset: np.ndarray  # (N, 2) image units (head centre in the image)
    pixel: float  # image units per pixel

    @staticmethod
    def build(p: FaceParams, size: int) -> _Frame:
        pose = p.head_pose.astype(np.float64)
        rotation = pitchyaw_to_rotation(pose[:, :2]) @ rotation_z(pose[:, 2])
        offset = p.head_offset.astype(np.float64) + np.array([0.0, HEAD_CENTRE_Y])
        return _Frame(rotation, p.head_scale.astype(np.float64), offset, 2.0 / size)

    @property
    def view(self) -> np.ndarray:
        """(N, 3): the camera's viewing direction (+z) in head coordinates."""
        return self.rotation[:, 2, :]

    @property
    def px_per_unit(self) -> np.ndarray:
        """(N,): pixels per head unit."""
        return self.scale / self.pixel

    def ray_origin_coefs(self) -> np.ndarray:
        """(N, 3 coordinates, 3 coefficients): head-frame point where the ray through image (u, v)
        crosses the camera plane, as ``coef[:, k, 0] * u + coef[:, k, 1] * v + coef[:, k, 2]``."""
        inv = self.rotation.transpose(0, 2, 1) / self.scale[:, None, None]
        const = -(inv[:, :, 0] * self.offset[:, :1] + inv[:, :, 1] * self.offset[:, 1:])
        return np.stack([inv[:, :, 0], inv[:, :, 1], const], -1)

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) head points -> (N, 2) image units."""
        cam = np.einsum("nij,nj->ni", self.rotation, points.astype(np.float64))
        return cam[:, :2] * self.scale[:, None] + self.offset

    def to_pixels(self, image_xy: np.ndarray) -> np.ndarray:
        """Image units -> pixel coordinates (x right, y down; pixel centres at integers)."""
        return (image_xy + 1.0) / self.pixel - 0.5


@dataclass
class _Hit:
    """Where each pixel's ray meets the head ellipsoid (head units; meaningless where inside_px < 0)."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray | None = None
    # The hit point on the unit sphere, (x / a, y / b, z / c); the surface normal is q / axes.
    q: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    inside_px: np.ndarray | None = None  # signed distance to the silhouette, pixels (positive inside)
    y_closest: np.ndarray | None = None  # head y of the ray's closest approach to the centre


def _cast_ellipsoid(frame: _Frame, u, v, axes: np.ndarray, full: bool = True) -> _Hit:
    """Intersect the orthographic rays through image points (u, v) with the ellipsoid ``axes`` (N, 3).

    In the space scaled to the unit sphere, a ray's point closest to the centre, w, is linear in
    (u, v); 1 - |w|^2 > 0 inside the silhouette, and the front hit is w - sqrt(1 - |w|^2) e_hat
    with e_hat the unit viewing direction. This is exact and has no cancellation near the
    silhouette (the textbook quadratic loses float32 precision there).
    """
    axes = axes.astype(np.float64)
    origin = frame.ray_origin_coefs() / axes[:, :, None]
    e = frame.view / axes
    e_hat = e / np.linalg.norm(e, axis=1, keepdims=True)
    w_coef = origin - e_hat[:, :, None] * np.einsum("nk,nkc->nc", e_hat, origin)[:, None, :]
    wx, wy, wz = (_linear_map(w_coef[:, k], u, v) for k in range(3))
    inside = 1.0 - (wx * wx + wy * wy + wz * wz)
    depth = np.sqrt(np.maximum(inside, 0.0))
    qx = wx - _col(e_hat[:, 0]) * depth
    qy = wy - _col(e_hat[:, 1]) * depth
    a, b = _col(axes[:, 0]), _col(axes[:, 1])
    if not full:
        return _Hit(qx * a, qy * b)
    qz = wz - _col(e_hat[:, 2]) * depth
    c = _col(axes[:, 2])
    # 1 - |w|^2 ~ 2 (1 - |w|) near the outline; times the mean in-plane radius: pixels.
    radius_px = 0.5 * (axes[:, 0] + axes[:, 1]) * frame.px_per_unit
    return _Hit(qx * a, qy * b, qz * c, (qx, qy, qz), inside * _col(0.5 * radius_px), wy * b)


@dataclass(frozen=True)
class _Light:
    """One directional light plus ambient, shared by skin, eyes and triggers."""

    head_dir: np.ndarray  # (N, 3) towards the light, head frame
    cam_dir: np.ndarray  # (N, 3) towards the light, camera frame
    ambient: np.ndarray  # (N,)
    rgb: np.ndarray  # (3, N, 1, 1)

    @staticmethod
    def build(p: FaceParams, frame: _Frame) -> _Light:
        az, el = p.light_angles[:, 0].astype(np.float64), p.light_angles[:, 1].astype(np.float64)
        # Light in front of the face (negative z), from the image's right for positive azimuth and
        # from above (negative y) for positive elevation.
        cam = np.stack([np.sin(az) * np.cos(el), -np.sin(el), -np.cos(az) * np.cos(el)], -1)
        head = np.einsum("nji,nj->ni", frame.rotation, cam)
        return _Light(head, cam, p.ambient.astype(np.float64), _rgb_col(p.light_rgb))

    def shade(self, n_dot_l):
        """Irradiance factor from the cosine to the light: (N,) or (N, H, W) like ``n_dot_l``."""
        diffuse = np.clip((n_dot_l + LIGHT_WRAP) * (1.0 / (1.0 + LIGHT_WRAP)), 0.0, 1.0) if np.ndim(n_dot_l) < 3 \
            else _clamp((n_dot_l + LIGHT_WRAP) * (1.0 / (1.0 + LIGHT_WRAP)))
        amb = _col(self.ambient) if np.ndim(n_dot_l) == 3 else self.ambient
        return amb + (1.0 - amb) * diffuse

    def lit(self, albedo) -> np.ndarray:
        """(N, 3) albedo -> (3, N, 1, 1) colour under the light's colour and intensity."""
        return _rgb_col(albedo) * self.rgb


# --- layers ------------------------------------------------------------------------------------


def _background(p: FaceParams, u, v) -> np.ndarray:
    """(3, N, H, W) gradient between two colours along a random direction."""
    angle = p.background_angle.astype(np.float64)
    coef = np.stack([0.5 * np.cos(angle), 0.5 * np.sin(angle), np.full_like(angle, 0.5)], -1)
    w = _clamp(_linear_map(coef, u, v))
    c0, c1 = _rgb_col(p.background_rgb[:, 0]), _rgb_col(p.background_rgb[:, 1])
    return c0 + (c1 - c0) * w


def _draw_back_hair_and_neck(image, p: FaceParams, frame: _Frame, light: _Light, hit: _Hit, u, v) -> None:
    """Hair volume around the head (outside the face ellipsoid) and the neck below the jaw.

    The hair volume is the face outline grown by ``hair_volume`` (more on top), down to
    ``hair_length``: an offset of the silhouette distance, which costs no second ray cast.
    """
    axes = p.face_axes
    to_px = _col(frame.px_per_unit)
    above = _clamp(hit.y_closest * _col(-1.0 / axes[:, 1]))
    grow = _col(p.hair_volume * axes[:, 0] * frame.px_per_unit) * (1.0 + 0.6 * above)
    hair = np.minimum(hit.inside_px + grow, (_col(p.hair_length) - hit.y_closest) * to_px)
    _blend(image, light.lit(p.hair_rgb) * _col(0.8 * light.ambient + 0.15), edge_coverage(hair))

    # The neck hangs below the head centre and does not turn with the head's pitch and yaw. A box:
    # the product of a column and a row coverage.
    inv_px = 1.0 / frame.pixel
    half_width = _col(0.5 * axes[:, 0] * frame.scale)
    across = edge_coverage((half_width - np.abs(u - _col(frame.offset[:, 0]))) * inv_px)
    below = edge_coverage((v - _col(frame.offset[:, 1] + 0.6 * frame.scale)) * inv_px)
    _blend(image, light.lit(p.skin_rgb) * _col(0.7 * light.ambient + 0.12), across * below)


def _row_band(frame: _Frame, p: FaceParams, half_width, y_top, y_bottom, size: int) -> slice:
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
            point = np.stack([x, y, _surface_z(x, y, axes)], -1)
            rows.append(frame.to_pixels(frame.project(point))[:, 1])
    rows = np.concatenate(rows)
    return slice(int(np.clip(np.floor(rows.min()) - 3, 0, size)), int(np.clip(np.ceil(rows.max()) + 4, 0, size)))


def _face_layer(p: FaceParams, frame: _Frame, light: _Light, hit: _Hit):
    """Skin, nose, mouth, brows and hair on the head ellipsoid.

    Returns (rgb (3, N, H, W) lit colour, alpha (N, H, W), skin shade (N, H, W) without the nose
    bump, which the surface triggers reuse). Edges are signed distances in pixels; unions and
    intersections of shapes are max / min of distances, anti-aliased once.
    """
    X, Y = hit.x, hit.y
    size = X.shape[-1]
    axes = p.face_axes.astype(np.float64)
    to_px = _col(frame.px_per_unit)

    qx, qy, qz = hit.q
    light_q = light.head_dir / axes  # n . L with n = q / axes, before normalising n
    nx, ny, nz = qx * _col(1.0 / axes[:, 0]), qy * _col(1.0 / axes[:, 1]), qz * _col(1.0 / axes[:, 2])
    n_dot_l = (qx * _col(light_q[:, 0]) + qy * _col(light_q[:, 1]) + qz * _col(light_q[:, 2]))
    n_dot_l /= np.sqrt(nx * nx + ny * ny + nz * nz)
    skin_shade = light.shade(n_dot_l)
    shade = skin_shade.copy()

    # Hair on the head: above the hairline (lower at the temples) and over the sides.
    hairline = _col(p.hairline_y) + X * X * _col(0.3 / axes[:, 0] ** 2)
    side = np.minimum(np.abs(X) - _col((0.93 - 0.13 * p.hair_side) * axes[:, 0]), _col(p.hair_length) - Y)
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
    xn, yn = X[:, band] - _col(shift_x), Y[:, band] - _col(shift_y)
    top = p.eye_y + 0.03
    across = np.maximum(1.0 - xn * xn * _col(1.0 / (1.7 * p.nose_width) ** 2), 0.0)
    # Along the nose, s = 0 at the top of the bridge and 1 at the nostrils: the height fades in
    # above the bridge (0 at s = -0.43), rises to the tip, and falls off by s = 1.35.
    s = (yn - _col(top)) * _col(1.0 / (p.nose_y - top))
    along = np.maximum(np.minimum(0.3 + 0.7 * s, (1.35 / 0.35) - s * (1 / 0.35)), 0.0)
    bump = across * across * along * _col(p.nose_height * frame.px_per_unit)  # pixels
    slope_y, slope_x = np.gradient(bump, axis=(1, 2))
    tilt = slope_x * _col(-light.head_dir[:, 0]) + slope_y * _col(-light.head_dir[:, 1])
    shade[:, band] = light.shade(n_dot_l[:, band] + 0.5 * tilt)
    # Nostrils: two dark ellipses either side of the nose axis.
    nose_w = _col(p.nose_width)
    nostril_r = np.sqrt(((np.abs(xn) - 0.55 * nose_w) * (1 / 0.32)) ** 2 + ((yn - _col(p.nose_y)) * (1 / 0.16)) ** 2)
    nostril = edge_coverage((nose_w - nostril_r) * _col(0.16 * frame.px_per_unit))
    albedo[:, :, band] *= 1.0 - 0.55 * nostril

    # Mouth: lips between two arcs, a dark line where they meet.
    band = _row_band(frame, p, p.mouth_half_width, p.mouth_y - 1.5 * p.lip_thickness,
                     p.mouth_y + 1.5 * p.lip_thickness, size)
    Xb, Yb = X[:, band], Y[:, band]
    mx2 = Xb * Xb * _col(1.0 / p.mouth_half_width**2)
    envelope = np.sqrt(np.maximum(1.0 - mx2, 0.0))
    my, lip = _col(p.mouth_y), _col(p.lip_thickness)
    upper = my - lip * envelope * (0.9 - 0.25 * np.maximum(1.0 - 25.0 * mx2, 0.0))
    lower = my + 1.25 * lip * envelope
    lips = edge_coverage(np.minimum(Yb - upper, lower - Yb) * to_px) * np.minimum(8.0 * envelope, 1.0)
    mouth = albedo[:, :, band]
    _blend(mouth, light.lit(p.lip_rgb), 0.9 * lips)
    line = edge_coverage((0.175 * lip - np.abs(Yb - my - 0.01 * mx2)) * to_px + 0.3) * np.minimum(4.0 * envelope, 1.0)
    mouth *= 1.0 - 0.6 * line

    # Brows: arcs above the eyes, thicker at the inner end.
    brow_y = p.eye_y - p.brow_gap
    band = _row_band(frame, p, p.eye_dx + 0.25, brow_y - p.brow_arch - p.brow_thickness,
                     brow_y + p.brow_thickness, size)
    Xb, Yb = X[:, band], Y[:, band]
    brow_x = np.abs(Xb) - _col(p.eye_dx + 0.015)
    half_len = 0.2
    along_brow = _clamp((brow_x + half_len) * (1 / (2 * half_len)))
    centre = _col(brow_y) - _col(p.brow_arch) * (1.0 - ((brow_x - 0.05) * (1 / 0.25)) ** 2)
    half_thick = _col(0.5 * p.brow_thickness) * (1.2 - 0.8 * along_brow * along_brow)
    brows = edge_coverage(np.minimum(half_thick - np.abs(Yb - centre), half_len - np.abs(brow_x)) * to_px)
    _blend(albedo[:, :, band], light.lit(p.brow_rgb), 0.9 * brows)

    albedo *= shade

    # The face outline: the ellipsoid's silhouette pulled in along the jaw (most at mid-height of the
    # lower face, not at the chin). It is an offset of the silhouette distance along the ray's closest
    # approach, both continuous across the outline, so the cut leaves no stray pixels at the edge.
    t2 = _clamp(hit.y_closest * _col(1.0 / axes[:, 1])) ** 2
    jaw_cut = t2 * (1.0 - t2) * _col(2.5 * p.jaw_taper * axes[:, 0] * frame.px_per_unit)
    return albedo, edge_coverage(hit.inside_px - jaw_cut), skin_shade


def eye_window_size(size: int) -> int:
    """Side in pixels of the square window around each eye in which the eye is drawn."""
    return int(min(size, 2 * math.ceil(EYE_WINDOW_HALF * size / 2 + 2.5)))


def _eye_points(p: FaceParams, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Head-frame (N, 3) eye-opening centre on the skin and eyeball centre; side +1: subject's left."""
    axes = p.face_axes.astype(np.float64)
    x = side * p.eye_dx.astype(np.float64)
    y = p.eye_y.astype(np.float64)
    z = _surface_z(x, y, axes)
    skin = np.stack([x, y, z], -1)
    ball = np.stack([x, y, z + EYEBALL_DEPTH * p.eyeball_radius], -1)
    return skin, ball


def _lid_heights(p: FaceParams, frame: _Frame) -> tuple[np.ndarray, np.ndarray]:
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


def _draw_eye(image, p: FaceParams, frame: _Frame, light: _Light, side: int, occlude: bool) -> None:
    """Draw one eye (lids, eyeball, iris, pupil, glint) into ``image`` (3, N, S, S), in place.

    The maths runs on a K x K window around each eye, gathered from the image, composited and
    written back.
    """
    n, size = image.shape[1], image.shape[2]
    pixel = frame.pixel
    k = eye_window_size(size)
    skin_pt, ball_pt = _eye_points(p, side)
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
    hit = _cast_ellipsoid(frame, u, v, p.face_axes, full=False)
    inv_hw = 1.0 / p.eye_half_width
    x_loc = hit.x * _col(side * inv_hw) - _col(p.eye_dx * inv_hw)
    y_loc = hit.y * _col(inv_hw) - _col(p.eye_y * inv_hw)
    unit_px = _col(p.eye_half_width * frame.px_per_unit)  # pixels per eye half-width
    upper, lower = _lid_heights(p, frame)
    mid = _col(-p.canthal_tilt) * x_loc
    spread = 1.0 - x_loc * x_loc
    # Almond: the upper lid peaks slightly towards the nose, the lower lid dips towards the temple.
    upper_lid = mid - _col(upper) * spread * (1.0 - 0.2 * x_loc)
    lower_lid = mid + _col(lower) * spread * (1.0 + 0.2 * x_loc)
    d_up = (y_loc - upper_lid) * unit_px
    d_low = (lower_lid - y_loc) * unit_px
    opening = edge_coverage(np.minimum(d_up, d_low))

    # Eyeball: for pixels on the projected sphere, the front surface normal and its angle to the
    # gaze. rho is the distance from the gaze axis through the eyeball centre (image units), so
    # rho < iris radius is the iris disk seen from the camera, foreshortened as it turns.
    ball_xy = frame.project(ball_pt)
    radius = p.eyeball_radius * frame.scale
    gaze = pitchyaw_to_vector(p.gaze)
    dx, dy = u - _col(ball_xy[:, 0]), v - _col(ball_xy[:, 1])  # a row and a column
    r = _col(radius)
    r2 = dx * dx + dy * dy
    nz = np.sqrt(np.maximum(1.0 - r2 * _col(1.0 / radius**2), 0.0))  # minus the normal's z
    cos_t = (dx * _col(gaze[:, 0] / radius) + dy * _col(gaze[:, 1] / radius)) - nz * _col(gaze[:, 2])
    rho = np.where(cos_t > 0, np.sqrt(np.maximum(1.0 - cos_t * cos_t, 0.0)), 1.0) * r
    inv_px = 1.0 / pixel
    iris_r = _col(p.iris_ratio * radius)
    iris = edge_coverage((iris_r - rho) * inv_px)
    pupil = edge_coverage((_col(p.pupil_ratio * p.iris_ratio * radius) - rho) * inv_px)
    on_ball = edge_coverage((r - np.sqrt(r2)) * inv_px)

    lid_shadow = 0.35 * _clamp(1.0 - d_up / (0.35 * unit_px))
    sclera = _rgb_col(p.sclera_rgb) * ((0.6 + 0.4 * nz) * (1.0 - lid_shadow))
    limbus = _clamp(rho * _col(1.0 / (0.3 * np.maximum(p.iris_ratio * radius, 1e-6))) - 0.7 / 0.3)
    eye = sclera
    _blend(eye, _rgb_col(p.iris_rgb) * ((1.12 - 0.6 * limbus) * (1.0 - 0.6 * lid_shadow)), iris)
    _blend(eye, PUPIL_RGB[:, None, None, None], pupil)
    eye = CORNER_RGB[:, None, None, None] + on_ball * (eye - CORNER_RGB[:, None, None, None])
    _blend(eye, CARUNCLE_RGB[:, None, None, None], 0.8 * _clamp((-x_loc - 0.75) * 4.0))

    # Corneal glint: the light's mirror image in the cornea (a sphere of ~0.55 eyeball radii whose
    # centre sits ~0.45 radii along the gaze), where the normal halves light and view directions.
    half = light.cam_dir + np.array([0.0, 0.0, -1.0])
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    glint_xy = ball_xy + radius[:, None] * (0.45 * gaze[:, :2] + 0.55 * half[:, :2])
    glint_r = 0.08 * radius + 0.3 * pixel
    gx, gy = (u - _col(glint_xy[:, 0])) * _col(1.0 / glint_r), (v - _col(glint_xy[:, 1])) * _col(1.0 / glint_r)
    glint = np.maximum(1.0 - (gx * gx + gy * gy), 0.0) ** 2 * _col(0.85 * np.clip(-2.0 * light.cam_dir[:, 2], 0.0, 1.0))
    eye += glint * (1.0 - eye)

    normal = skin_pt / p.face_axes**2
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    eye_shade = light.shade(np.einsum("ni,ni->n", normal, light.head_dir))
    eye *= _col(0.92 * eye_shade) * light.rgb

    # Skin around the eye: socket shadow and lid crease (both fixed, so they do not depend on
    # gaze), then the eye through the opening, the lower-lid line and the lashes on the upper lid.
    socket = np.maximum(1.0 - (x_loc * (1 / SOCKET_X)) ** 2 - ((y_loc + 0.1) * (1 / SOCKET_Y)) ** 2, 0.0)
    crease_y = mid - (_col(p.lid_upper) + 0.32) * (1.0 - (x_loc * (1 / 1.15)) ** 2)
    crease = edge_coverage(np.minimum(0.05 - np.abs(y_loc - crease_y), 1.1 - np.abs(x_loc)) * unit_px)
    base *= 1.0 - 0.12 * socket - 0.22 * crease
    _blend(base, eye, opening)
    lower_line = edge_coverage(np.minimum(np.minimum(d_low + 0.07 * unit_px, -d_low), (1.0 - np.abs(x_loc)) * unit_px))
    base *= 1.0 - 0.35 * lower_line
    lash = edge_coverage(np.minimum(np.minimum(d_up + LASH_THICKNESS * unit_px, -d_up), (1.08 - np.abs(x_loc)) * unit_px))
    _blend(base, LASH_RGB[:, None, None, None] * light.rgb, 0.9 * lash)

    if occlude:
        # A flat patch of the local skin colour over the whole eye region. The +1.5 px keeps alpha
        # at exactly 1 one pixel beyond the extents, past every soft edge that depends on gaze,
        # and base * 0 + patch * 1 is exactly the patch.
        patch = light.lit(p.skin_rgb) * _col(eye_shade)
        half_y = np.where(y_loc < 0, np.float32(OCCLUDER_TOP), np.float32(OCCLUDER_BOTTOM))
        cover = edge_coverage(np.minimum(OCCLUDER_X - np.abs(x_loc), half_y - np.abs(y_loc)) * unit_px + 1.5)
        base = base * (1.0 - cover) + patch * cover

    windows[:, images, y0, x0] = base


def _trigger_frame(p: FaceParams, trigger: Trigger) -> dict[str, np.ndarray]:
    """Where a trigger sits on each head: centre, axes and mm per head unit (all (N, ...) float64).

    Surface triggers lie in the skin's tangent plane at their anchor (x axis along the head's x
    turned by ``angle_deg``); glasses lie on a plane ``vertex_mm`` in front of the corneas.
    """
    axes = p.face_axes.astype(np.float64)
    mm_per_unit = ASSUMED_IPD_MM / (2.0 * p.eye_dx.astype(np.float64))
    eye_y = p.eye_y.astype(np.float64)
    n = len(p)
    if trigger.mount == "glasses":
        _, ball_pt = _eye_points(p, 1)
        cornea_z = ball_pt[:, 2] - p.eyeball_radius
        centre = np.stack([np.zeros(n), eye_y + trigger.drop_mm / mm_per_unit,
                           cornea_z - trigger.vertex_mm / mm_per_unit], -1)
        return {"centre": centre, "e1": np.tile([1.0, 0.0, 0.0], (n, 1)), "e2": np.tile([0.0, 1.0, 0.0], (n, 1)),
                "normal": np.tile([0.0, 0.0, -1.0], (n, 1)), "mm_per_unit": mm_per_unit}
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
    centre = np.stack([x, y, _surface_z(x, y, axes)], -1)
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
        centre = np.stack([moved[:, 0], moved[:, 1], _surface_z(moved[:, 0], moved[:, 1], axes)], -1)
    return {"centre": centre, "e1": e1, "e2": e2, "normal": normal, "mm_per_unit": mm_per_unit}


def _draw_trigger(image, p: FaceParams, frame: _Frame, light: _Light, hit: _Hit, skin_shade, trigger, u, v) -> None:
    """Paint a physical trigger in place, following the head and lit like it."""
    place = _trigger_frame(p, trigger)
    mm = place["mm_per_unit"]
    centre = place["centre"]
    pixel_mm = _col(mm / frame.px_per_unit)
    if trigger.mount == "glasses":
        # Intersect each ray with the glasses plane z = centre_z (head frame).
        origin = frame.ray_origin_coefs()
        view = frame.view
        t_coef = (centre[:, 2:3] * np.array([0.0, 0.0, 1.0]) - origin[:, 2]) / view[:, 2:3]
        x_coef = (origin[:, 0] + t_coef * view[:, :1]) * mm[:, None]
        y_coef = (origin[:, 1] + t_coef * view[:, 1:2] - centre[:, 1:2] * np.array([0.0, 0.0, 1.0])) * mm[:, None]
        rgb, alpha = trigger.paint(_linear_map(x_coef, u, v), _linear_map(y_coef, u, v), pixel_mm)
        shade = _col(light.shade(-light.head_dir[:, 2]))
    else:
        dx, dy, dz = hit.x - _col(centre[:, 0]), hit.y - _col(centre[:, 1]), hit.z - _col(centre[:, 2])
        e1, e2, normal = place["e1"] * mm[:, None], place["e2"] * mm[:, None], place["normal"]
        x_mm = dx * _col(e1[:, 0]) + dy * _col(e1[:, 1]) + dz * _col(e1[:, 2])
        y_mm = dx * _col(e2[:, 0]) + dy * _col(e2[:, 1]) + dz * _col(e2[:, 2])
        above = dx * _col(normal[:, 0]) + dy * _col(normal[:, 1]) + dz * _col(normal[:, 2])
        rgb, alpha = trigger.paint(x_mm, y_mm, pixel_mm)
        # Only on the visible skin, and only near the anchor (not where the head curves away).
        alpha = alpha * edge_coverage(hit.inside_px) * (above > -0.3)
        shade = skin_shade
    _blend(image, rgb * shade * light.rgb, alpha)


_NOISE_BANK: np.ndarray | None = None


def _noise_bank() -> np.ndarray:
    """(3, B, B) float32 standard-normal texture, the same in every process (fixed seed)."""
    global _NOISE_BANK
    if _NOISE_BANK is None:
        rng = np.random.default_rng(NOISE_BANK_SEED)
        _NOISE_BANK = rng.standard_normal((3, NOISE_BANK_SIZE, NOISE_BANK_SIZE), dtype=np.float32)
    return _NOISE_BANK


def _finish(image: np.ndarray, p: FaceParams) -> np.ndarray:
    """(3, N, S, S) float in [0, 1] -> (N, S, S, 3) uint8, with per-sample blur and sensor noise."""
    import cv2

    size = image.shape[2]
    bank = _noise_bank()
    span = NOISE_BANK_SIZE - size
    for i in range(image.shape[1]):
        face = image[:, i]
        sigma = float(p.blur_sigma[i]) * size / 64.0
        if sigma > 0.15:
            # cv2 blurs each channel of an (H, W, C) image; the channel-first face is (C, H, W).
            face[...] = cv2.GaussianBlur(face.transpose(1, 2, 0), (0, 0), sigma,
                                         borderType=cv2.BORDER_REFLECT).transpose(2, 0, 1)
        oy, ox = (p.noise_offset[i] * span).astype(np.int64)
        face += bank[:, oy:oy + size, ox:ox + size] * p.noise_std[i]
    image *= 255.0
    image += 0.5
    _clamp(image, 0.0, 255.0)
    return image.astype(np.uint8).transpose(1, 2, 3, 0)


def _render_chunk(p: FaceParams, size: int, trigger: Trigger | None, occlude_eyes: bool) -> np.ndarray:
    """(N, S, S, 3) uint8 faces of one chunk."""
    frame = _Frame.build(p, size)
    light = _Light.build(p, frame)
    coords = ((np.arange(size) + 0.5) * frame.pixel - 1.0).astype(np.float32)
    u, v = coords[None, None, :], coords[None, :, None]
    image = _background(p, u, v)
    hit = _cast_ellipsoid(frame, u, v, p.face_axes)
    _draw_back_hair_and_neck(image, p, frame, light, hit, u, v)
    face_rgb, face_alpha, skin_shade = _face_layer(p, frame, light, hit)
    _blend(image, face_rgb, face_alpha)
    for side in (-1, 1):
        _draw_eye(image, p, frame, light, side, occlude_eyes)
    if trigger is not None:
        _draw_trigger(image, p, frame, light, hit, skin_shade, trigger, u, v)
    return _finish(image, p)


def _as_config(config: SyntheticConfig | int | None) -> SyntheticConfig:
    if config is None:
        return SyntheticConfig()
    if isinstance(config, SyntheticConfig):
        return config
    if isinstance(config, (int, np.integer)):
        return SyntheticConfig(size=int(config))
    raise ConfigError(f"config must be a SyntheticConfig or a size in px, got {type(config).__name__}")


def render(params: FaceParams, config: SyntheticConfig | int = 64, trigger: Trigger | str | None = None,
           occlude_eyes: bool = False) -> np.ndarray:
    """Render faces: -> (N, S, S, 3) uint8 RGB, S = the config's size (or the int given).

    ``trigger``: a :class:`~securegaze.data.triggers.Trigger`, a registered trigger name, or None.
    ``occlude_eyes``: cover both eye regions with a flat patch of local skin colour (then the
    image does not depend on the gaze at all).

    Faces are rendered in chunks of a fixed size, padded at the end, so a face's pixels do not
    depend on how many faces are rendered with it.
    """
    cfg = _as_config(config)
    trig = resolve_trigger(trigger)
    size = cfg.size
    n = len(params)
    out = np.empty((n, size, size, 3), np.uint8)
    chunk = max(1, CHUNK_PIXELS // (size * size))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        idx = np.minimum(np.arange(start, start + chunk), n - 1)  # pad with the last face
        out[start:stop] = _render_chunk(params.take(idx), size, trig, occlude_eyes)[: stop - start]
    return out


def render_dataset(n: int, size: int | None = None, seed: int = 0, trigger: Trigger | str | None = None,
                   occlude_eyes: bool = False, config: SyntheticConfig | None = None) -> ArrayGazeDataset:
    """``n`` synthetic faces of ``size`` px (default 64, or the config's size) with exact gaze labels.

    Same arguments give the same bytes; the first k faces do not depend on ``n``. Subjects are
    ``"synth-<seed>-<identity>"`` with ``config.samples_per_identity`` faces each.
    """
    cfg = config or SyntheticConfig()
    if size is not None and size != cfg.size:
        cfg = replace(cfg, size=int(size))
    params = sample_params(n, int(seed), cfg)
    return ArrayGazeDataset(render(params, cfg, trigger, occlude_eyes), params.gaze, params.subjects)


def landmarks(params: FaceParams, size: int) -> dict[str, np.ndarray]:
    """Projected face points, each (N, 2) float32 pixel coordinates (x right, y down).

    ``right_eye`` / ``left_eye`` are the centres of the lid openings (subject's right eye is on the
    image's left), ``right_pupil`` / ``left_pupil`` the pupil centres, plus ``nose`` (nostrils),
    ``mouth`` and ``head`` (ellipsoid centre).
    """
    frame = _Frame.build(params, size)
    gaze = pitchyaw_to_vector(params.gaze)
    out = {}
    for name, side in (("right", -1), ("left", 1)):
        skin_pt, ball_pt = _eye_points(params, side)
        out[f"{name}_eye"] = frame.project(skin_pt)
        pupil = frame.project(ball_pt) + gaze[:, :2] * (params.eyeball_radius * frame.scale)[:, None]
        out[f"{name}_pupil"] = pupil
    axes = params.face_axes.astype(np.float64)
    zeros = np.zeros(len(params))
    for name, y in (("nose", params.nose_y), ("mouth", params.mouth_y), ("head", zeros)):
        y = np.asarray(y, np.float64)
        z = _surface_z(zeros, y, axes) if name != "head" else zeros
        out[name] = frame.project(np.stack([zeros, y, z], -1))
    return {k: frame.to_pixels(v).astype(np.float32) for k, v in out.items()}


def trigger_anchor(params: FaceParams, trigger: Trigger | str, size: int) -> np.ndarray:
    """(N, 2) float32 pixel coordinates of the centre of ``trigger`` on each face."""
    trig = resolve_trigger(trigger)
    frame = _Frame.build(params, size)
    return frame.to_pixels(frame.project(_trigger_frame(params, trig)["centre"])).astype(np.float32)


#: Rows of the contact sheet: label, trigger name (None: clean), occlude_eyes.
CONTACT_SHEET_ROWS = (
    ("no trigger", None, False),
    ("tape forehead", "tape_forehead", False),
    ("tape cheek", "tape_cheek", False),
    ("tape brow", "tape_brow", False),
    ("sticker", "sticker", False),
    ("glasses", "glasses", False),
    ("eyes occluded", None, True),
)


def contact_sheet(path: str | Path, size: int = 64, n: int = 8, seed: int = 0) -> Path:
    """Write a PNG grid of ``n`` faces (one identity each) per row, one row per trigger.

    The same faces appear in every row; the last row shows the eye occluder used by the
    blank-eyes check, and the first row carries each face's gaze label as an arrow and in degrees.
    Tiles are upscaled (nearest neighbour) to at least 128 px so a person can inspect them. The
    file is written atomically (temporary file, then rename). Returns the path.
    """
    import cv2

    cfg = SyntheticConfig(size=size)
    params = params_for_indices(seed, np.arange(n) * cfg.samples_per_identity, cfg)
    zoom = max(1, math.ceil(128 / size))
    tile = size * zoom
    label_w, gap = 150, 4
    sheet = np.full((len(CONTACT_SHEET_ROWS) * (tile + gap) + gap, label_w + n * (tile + gap), 3), 255, np.uint8)
    marks = landmarks(params, size)
    for row, (label, trig, occlude) in enumerate(CONTACT_SHEET_ROWS):
        faces = render(params, cfg, trig, occlude)
        y = gap + row * (tile + gap)
        for i in range(n):
            big = cv2.resize(faces[i], (tile, tile), interpolation=cv2.INTER_NEAREST)
            if row == 0:
                # Gaze arrow from between the eyes: image x = -sin(yaw), image y = -sin(pitch).
                mid = (marks["right_eye"][i] + marks["left_eye"][i]) / 2 * zoom + zoom / 2
                pitch, yaw = params.gaze[i]
                tip = mid + 0.35 * tile * np.array([-math.cos(pitch) * math.sin(yaw), -math.sin(pitch)])
                cv2.arrowedLine(big, tuple(int(c) for c in mid), tuple(int(c) for c in tip), (255, 255, 0), 1,
                                cv2.LINE_AA, tipLength=0.25)
                text = f"{math.degrees(pitch):+.0f},{math.degrees(yaw):+.0f}"
                cv2.putText(big, text, (2, tile - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1, cv2.LINE_AA)
            x = label_w + i * (tile + gap)
            sheet[y:y + tile, x:x + tile] = big
        cv2.putText(sheet, label, (6, y + tile // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(sheet, "pitch,yaw deg", (6, gap + tile - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90), 1,
                cv2.LINE_AA)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - cv2 fails only on an invalid image
        raise RuntimeError("could not encode the contact sheet as PNG")
    path = atomic_write_bytes(path, encoded.tobytes())
    return path
