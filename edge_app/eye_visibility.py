"""Eye availability: "monitoring degraded: eyes not visible" (issue 18, item 3).

A gaze model shown a face whose eyes cannot be seen (dark sunglasses, a frame too dark, glare)
still returns a gaze: a guess, and usually a wrong one, which the attention logic would turn into
"distracted" alarms. Production driver monitors report the eyes as unavailable instead and fall
back to the head (Euro NCAP's driver-state protocol asks for head-based monitoring when the eyes
are occluded). This stage does that from what the app already measures per frame: the
model-free estimate of :mod:`edge_app.free_gaze` says whether either iris stands out in the image
(``kind`` ``unseen``), or not.

**Entry point**: :class:`EyeVisibilityMonitor`, ``update(t_s, kind, reason)`` once per frame in
timestamp order, with the frame's :attr:`FreeGaze.kind <edge_app.free_gaze.FreeGaze.kind>` (None
without a face). It returns an :class:`EyeVisibility`; while ``degraded`` its ``reason`` (``"eyes
not visible: ..."``) is the frame's ``gaze_untrusted``, which puts the pipeline in the head-pose
mode of :mod:`edge_app.degraded` (alerts from the head only: never "distracted" while the head
faces the road), with the reason on the overlay's degraded stripe and in the JSON lines.

How it decides: over the latest ``window_s`` seconds it keeps the frames that say something about
the eyes: seen (``visible``, ``one_eye``, ``apart``) or unseen. Blinks (``closed``) and frames without a face
say nothing (a closed eye is the drowsiness monitor's business, a missing face the attention
logic's). It enters degraded mode when the unseen share reaches ``enter_share`` over a window that
spans at least half of ``window_s`` with ``min_frames`` frames, and leaves it when the share falls
to ``exit_share`` (hysteresis: a few frames either way do not flicker the mode). A driver who puts
on dark sunglasses is reported after about ``enter_share x window_s`` seconds (1.05 s with the
defaults), at any frame rate; ``took_s`` is that time, from the first unseen frame in the window to
the message, and stays on every degraded frame.

Times are seconds of the frames' own timestamps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from edge_app.free_gaze import APART, CLOSED, ONE_EYE, UNSEEN, VISIBLE
from securegaze.validation import StrictModel

#: The prefix of the degraded-mode reason (the overlay's stripe shows it after its own title).
EYES_NOT_VISIBLE = "eyes not visible"


class EyeSettings(StrictModel):
    """``eyes:`` in the config. The visibility tests of each frame (:mod:`edge_app.free_gaze`):
    ``min_eye_opening`` (lid gap over eye width: below, a blink), ``min_iris_contrast`` (colour
    camera) and ``min_iris_contrast_mono`` (near-infrared camera) for the iris, ``min_face_grey``
    (0-255: a darker face is too dark to see). The degraded decision: ``degrade`` (False: report
    only, never switch), ``window_s``, ``enter_share``, ``exit_share``, ``min_frames``. Reasons for
    each default are in ``calibration/edge_default.yaml``."""

    min_eye_opening: float = Field(0.15, ge=0, le=1)
    min_iris_contrast: float = Field(0.12, ge=0, le=2)
    min_iris_contrast_mono: float = Field(0.015, ge=0, le=2)
    min_face_grey: float = Field(25.0, ge=0, le=255)
    degrade: bool = True
    window_s: float = Field(1.5, gt=0.1, le=30)
    enter_share: float = Field(0.7, gt=0, le=1)
    exit_share: float = Field(0.3, ge=0, lt=1)
    min_frames: int = Field(3, ge=1, le=1000)

    @model_validator(mode="after")
    def _hysteresis(self) -> EyeSettings:
        if not self.exit_share < self.enter_share:
            raise ValueError(f"need exit_share < enter_share, got {self.exit_share:g} and {self.enter_share:g}")
        return self


@dataclass(frozen=True)
class EyeVisibility:
    """One frame's verdict. ``kind``: the frame's own (``visible``, ``one_eye``, ``closed``,
    ``unseen``; None without a face); ``unseen_share``: share of unseen frames among those in the
    window that say something (None when none do); ``degraded``: eyes reported not visible;
    ``reason``: the degraded-mode reason (None when not degraded); ``took_s``: from the first unseen
    frame of the window that entered degraded mode to the message (None when not degraded)."""

    kind: str | None
    unseen_share: float | None
    degraded: bool
    reason: str | None
    took_s: float | None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind,
                "unseen_share": None if self.unseen_share is None else round(self.unseen_share, 3),
                "degraded": self.degraded, "reason": self.reason,
                "took_s": None if self.took_s is None else round(self.took_s, 3)}


class EyeVisibilityMonitor:
    """The windowed decision of the module docstring; :meth:`update` once per frame."""

    def __init__(self, settings: EyeSettings | None = None) -> None:
        self.settings = settings or EyeSettings()
        self._window: deque[tuple[float, bool]] = deque()  # (t, unseen) of the frames that say something
        self._last_reason: str | None = None
        self._degraded = False
        self._took_s: float | None = None
        self._last_t: float | None = None

    def reset(self) -> None:
        self.__init__(self.settings)

    def update(self, t_s: float, kind: str | None, reason: str | None = None) -> EyeVisibility:
        s = self.settings
        if self._last_t is not None and t_s < self._last_t:
            self.reset()  # time went back (a new recording): start afresh
        self._last_t = t_s
        if kind not in (None, VISIBLE, ONE_EYE, APART, CLOSED, UNSEEN):
            raise ValueError(f"unknown eye kind {kind!r}")
        if kind in (VISIBLE, ONE_EYE, APART, UNSEEN):
            self._window.append((t_s, kind == UNSEEN))
            if kind == UNSEEN:
                self._last_reason = reason
        while self._window and self._window[0][0] < t_s - s.window_s:
            self._window.popleft()
        n = len(self._window)
        unseen = sum(u for _, u in self._window)
        share = unseen / n if n else None
        spans = n >= s.min_frames and t_s - self._window[0][0] >= 0.5 * s.window_s if n else False
        if not self._degraded and spans and share >= s.enter_share:
            self._degraded = True
            first_unseen = next(t for t, u in self._window if u)
            self._took_s = t_s - first_unseen
        elif self._degraded and share is not None and share <= s.exit_share:
            self._degraded = False
            self._took_s = None
        if not (self._degraded and s.degrade):
            return EyeVisibility(kind, share, False, None, None)
        why = f"{EYES_NOT_VISIBLE}: {self._last_reason or 'iris not seen'}; {unseen} of {n} frames in the last " \
              f"{s.window_s:g} s"
        return EyeVisibility(kind, share, True, why, self._took_s)
