"""Layout of a normalised face crop: where the head, eyes and lids sit, and the palettes.

Image units: the crop spans [-1, 1] in both axes (x right, y down).
"""

from __future__ import annotations

import math

import numpy as np

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
IDENTITY_STREAM = 1
SAMPLE_STREAM = 2
#: Per-sample draws of the cabin conditions (securegaze.data.synthetic.conditions): a stream of its
#: own, so the faces' draws above stay what they were.
CONDITION_STREAM = 3
# Uniform draws reserved per identity / per sample (more than used, so new draws can be appended
# without changing existing datasets).
IDENTITY_DRAWS = 64
SAMPLE_DRAWS = 48
CONDITION_DRAWS = 64
#: The column of the condition draws that picks a face's entry of a condition mix (no condition uses it).
MIX_COLUMN = CONDITION_DRAWS - 1

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
#: Photo-studio backdrop papers (the "studio" backdrop): storm grey, slate blue, teal, olive, warm
#: beige, charcoal.
BACKDROP_PALETTE = np.array([
    [0.46, 0.48, 0.50], [0.30, 0.38, 0.52], [0.20, 0.42, 0.42],
    [0.40, 0.42, 0.26], [0.62, 0.55, 0.44], [0.18, 0.18, 0.20],
])
PUPIL_RGB = np.array([0.03, 0.03, 0.035], dtype=np.float32)
LASH_RGB = np.array([0.06, 0.045, 0.04], dtype=np.float32)
#: Inner-corner tissue (caruncle) and the shadowed tissue just outside the eyeball's silhouette.
CARUNCLE_RGB = np.array([0.80, 0.50, 0.47], dtype=np.float32)
CORNER_RGB = np.array([0.45, 0.30, 0.28], dtype=np.float32)

