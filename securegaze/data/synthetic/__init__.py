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

# The layout constants (securegaze.data.synthetic.layout) stay in their module; HEAD_CENTRE_Y is
# re-exported because the synthetic driver places its camera with it.
from securegaze.data.synthetic.conditions import CONDITIONS, condition_draws, with_condition_draws
from securegaze.data.synthetic.contact_sheet import CONTACT_SHEET_ROWS, contact_sheet
from securegaze.data.synthetic.eyes import eye_window_size
from securegaze.data.synthetic.faces import FaceParams, SyntheticConfig, params_for_indices, sample_params
from securegaze.data.synthetic.layout import HEAD_CENTRE_Y
from securegaze.data.synthetic.render import landmarks, render, render_dataset, trigger_anchor
from securegaze.data.synthetic.styles import STYLES, synthetic_style

__all__ = [
    "CONDITIONS",
    "CONTACT_SHEET_ROWS",
    "FaceParams",
    "HEAD_CENTRE_Y",
    "STYLES",
    "SyntheticConfig",
    "condition_draws",
    "contact_sheet",
    "eye_window_size",
    "landmarks",
    "params_for_indices",
    "render",
    "render_dataset",
    "sample_params",
    "synthetic_style",
    "trigger_anchor",
    "with_condition_draws",
]
