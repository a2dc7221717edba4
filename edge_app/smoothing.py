"""One Euro filter (Casiez, Roussel, Vogel, CHI 2012) for the gaze angles.

A first-order low-pass whose cutoff rises with the signal's speed: at fixation the cutoff sits
at ``min_cutoff_hz`` and the model's frame-to-frame noise is averaged away; in a saccade the
speed raises it by ``beta`` x speed so the filter follows without lag. Time steps come from the
frame timestamps, so a dropped frame is a longer step, not a wrong one.

Units: the signal is (pitch, yaw) radians; speeds rad/s; cutoffs Hz; ``beta`` Hz per rad/s.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class OneEuroSettings(BaseModel):
    """Filter settings. Defaults: 1 Hz at fixation keeps a few degrees of model noise out of the
    zone decision; a 300 deg/s saccade (5.2 rad/s) lifts the cutoff to ~11 Hz with beta 2, so the
    gaze reaches a new zone within a frame or two (both tuned on the synthetic driver)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_cutoff_hz: float = Field(1.0, gt=0, le=100, description="cutoff at rest, Hz")
    beta: float = Field(2.0, ge=0, le=100, description="cutoff increase per rad/s of speed")
    derivative_cutoff_hz: float = Field(1.0, gt=0, le=100, description="cutoff of the speed estimate, Hz")
    reset_after_s: float = Field(0.5, gt=0, le=10, description="a gap longer than this restarts the filter")


def _alpha(cutoff_hz: float, dt: float) -> float:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filter a (D,) signal sampled at irregular times: ``filter(t_s, x)`` -> smoothed (D,)."""

    def __init__(self, settings: OneEuroSettings | None = None) -> None:
        self.settings = settings or OneEuroSettings()
        self.reset()

    def reset(self) -> None:
        self._t: float | None = None
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def filter(self, t_s: float, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        s = self.settings
        if self._t is None or t_s - self._t > s.reset_after_s or t_s <= self._t:
            # First sample, a long gap (face lost) or time going backwards (a new video): restart.
            self._t, self._x, self._dx = t_s, x.copy(), np.zeros_like(x)
            return x.copy()
        dt = t_s - self._t
        a_d = _alpha(s.derivative_cutoff_hz, dt)
        dx = a_d * (x - self._x) / dt + (1 - a_d) * self._dx
        cutoff = s.min_cutoff_hz + s.beta * np.abs(dx)
        tau = 1.0 / (2.0 * np.pi * cutoff)
        a = 1.0 / (1.0 + tau / dt)
        self._x = a * x + (1 - a) * self._x
        self._dx, self._t = dx, t_s
        return self._x.copy()
