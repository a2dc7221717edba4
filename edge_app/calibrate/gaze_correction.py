"""A driver's gaze correction: the per-driver calibration file, and applying it in the pipeline.

Gaze models learn the average eye; a person's visual axis sits a few degrees off the axis their
eye's appearance shows (the angle kappa, ~5 deg horizontally), and a model has its own bias on
each face. ``edge-app calibrate driver`` measures both for one driver and stores a correction of
the model's output in the **normalised camera frame** (docs/architecture.md section 2), where the
offset is fixed to the head, not to the camera::

    corrected_deg = matrix @ (pitch_deg, yaw_deg) + bias_deg

``correction: bias`` has the identity matrix; ``affine`` a small linear part as well (a scale of
the eye's turn, fitted only from targets spread both ways). The pipeline applies it to the model's
output before the de-normalisation (:class:`~edge_app.pipeline.Pipeline`), so every later stage
(zones, timers, the JSON lines) sees the corrected gaze.

Store: one file per driver, ``<store>/<driver id>.yaml`` (the ``driver`` section of the config:
``store``, default ``$SECUREGAZE_DRIVERS_DIR`` or ``~/.local/share/securegaze-edge/drivers``;
``id``, or ``edge-app run --driver ID``). One file per driver means a calibration rewrites only
its own driver's file, atomically. A file is tied to the gaze model it was fitted for
(``gaze_model_sha256``): another model has other biases, and the app refuses the pair.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from securegaze.errors import ConfigError
from securegaze.io import read_yaml
from securegaze.validation import StrictModel, validation_line

FORMAT = "securegaze-driver-calibration/1"
DRIVER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: Limits a file may hold: a personal offset beyond MAX_BIAS_DEG is not an eye's, and a linear part
#: with a singular value outside MATRIX_RANGE distorts the gaze rather than correcting it.
MAX_BIAS_DEG = 15.0
MATRIX_RANGE = (0.6, 1.6)


class DriverSettings(StrictModel):
    """The ``driver`` section of the config: ``id`` of the driver whose calibration applies
    (``edge-app run --driver`` wins; None: no correction) and the ``store`` folder of calibrations."""

    id: str | None = Field(None, pattern=DRIVER_ID_PATTERN)
    store: Path | None = None


def default_driver_store() -> Path:
    """``$SECUREGAZE_DRIVERS_DIR``, or ``~/.local/share/securegaze-edge/drivers``."""
    env = os.environ.get("SECUREGAZE_DRIVERS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "securegaze-edge" / "drivers"


def driver_file(settings: DriverSettings, driver_id: str | None = None) -> Path:
    """The calibration file of ``driver_id`` (default: ``settings.id``) in the store."""
    name = driver_id or settings.id
    if name is None:
        raise ConfigError("no driver id given")
    return (settings.store or default_driver_store()) / f"{name}.yaml"


class DriverCalibrationFile(StrictModel):
    """The YAML file (see the module docstring); ``fit``: how it was measured (for people)."""

    format: Literal["securegaze-driver-calibration/1"]
    driver_id: str = Field(pattern=DRIVER_ID_PATTERN)
    created_utc: str
    correction: Literal["bias", "affine"]
    frame: Literal["normalised"] = "normalised"
    matrix: tuple[tuple[float, float], tuple[float, float]]
    bias_deg: tuple[float, float]
    gaze_model_sha256: str | None = None
    fit: dict[str, Any] = {}

    @model_validator(mode="after")
    def _plausible(self) -> DriverCalibrationFile:
        m, b = np.asarray(self.matrix), np.asarray(self.bias_deg)
        if not (np.all(np.isfinite(m)) and np.all(np.isfinite(b))):
            raise ValueError("matrix and bias_deg must be finite numbers")
        if np.hypot(*b) > MAX_BIAS_DEG:
            raise ValueError(f"bias_deg {list(b)} is over {MAX_BIAS_DEG:g} deg: not a personal offset")
        sv = np.linalg.svd(m, compute_uv=False)
        if not (MATRIX_RANGE[0] <= sv.min() and sv.max() <= MATRIX_RANGE[1]) or np.linalg.det(m) <= 0:
            raise ValueError(f"matrix {m.tolist()} is not a small correction (singular values "
                             f"{MATRIX_RANGE[0]:g}-{MATRIX_RANGE[1]:g}, no mirroring)")
        if self.correction == "bias" and not np.allclose(m, np.eye(2)):
            raise ValueError("correction bias must have the identity matrix")
        return self


@dataclass(frozen=True)
class GazeCorrection:
    """A driver's correction: ``matrix`` (2, 2) and ``bias_deg`` (2,) on (pitch, yaw) degrees in the
    normalised frame; ``source``: the file it came from."""

    driver_id: str
    kind: str
    matrix: np.ndarray
    bias_deg: np.ndarray
    gaze_model_sha256: str | None = None
    source: str = ""

    def apply(self, pitchyaw_rad) -> np.ndarray:
        """(..., 2) normalised-frame gaze radians -> corrected, radians (float64)."""
        deg = np.degrees(np.asarray(pitchyaw_rad, dtype=np.float64))
        return np.radians(deg @ self.matrix.T + self.bias_deg)

    def describe(self) -> str:
        p, y = self.bias_deg
        text = f"driver {self.driver_id}: {self.kind} correction, bias ({p:+.2f}, {y:+.2f}) deg (pitch, yaw)"
        if self.kind == "affine":
            text += f", matrix {np.round(self.matrix, 3).tolist()}"
        return text + (f" from {self.source}" if self.source else "")


def read_gaze_correction(path: str | os.PathLike) -> GazeCorrection:
    """The correction in a driver calibration file; one ConfigError line for a bad file."""
    path = Path(path)
    data = read_yaml(path, "driver calibration")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a driver calibration mapping written by edge-app calibrate driver")
    try:
        f = DriverCalibrationFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_line(exc)}") from None
    return GazeCorrection(f.driver_id, f.correction, np.asarray(f.matrix, dtype=np.float64),
                          np.asarray(f.bias_deg, dtype=np.float64), f.gaze_model_sha256, str(path))


def with_driver(config, driver: str | None):
    """``config`` with the ``--driver`` option applied: a driver id (its file in the store) or the
    path of a calibration file (``.yaml``; its folder becomes the store). None: unchanged."""
    import re

    if driver is None:
        return config
    path = Path(driver).expanduser()
    if path.suffix.lower() in (".yaml", ".yml") or os.sep in driver:
        if not path.is_file():
            raise ConfigError(f"--driver {driver}: driver calibration file not found")
        settings = DriverSettings(id=None, store=path.resolve().parent)
        name = path.stem
    else:
        settings, name = config.driver, driver
    if not re.match(DRIVER_ID_PATTERN, name):
        raise ConfigError(f"--driver {driver}: a driver id is letters, digits, '.', '_' or '-' (up to 64), "
                          "or the path of a .yaml calibration file")
    return config.model_copy(update={"driver": settings.model_copy(update={"id": name})})


def load_gaze_correction(config, onnx_sha256: str | None = None) -> GazeCorrection | None:
    """The correction the config's ``driver`` section names (None: no driver named). The file must
    be that driver's and, when ``onnx_sha256`` is given, fitted for that model (ConfigError)."""
    settings = getattr(config, "driver", None)
    if settings is None or settings.id is None:
        return None
    path = driver_file(settings)
    if not path.is_file():
        raise ConfigError(f"{path}: no calibration for driver {settings.id} (run edge-app calibrate driver "
                          f"--driver-id {settings.id})")
    correction = read_gaze_correction(path)
    if correction.driver_id != settings.id:
        raise ConfigError(f"{path}: holds the calibration of driver {correction.driver_id}, not {settings.id}")
    if onnx_sha256 is not None and correction.gaze_model_sha256 not in (None, onnx_sha256):
        raise ConfigError(f"{path}: driver {settings.id} was calibrated for gaze model "
                          f"{correction.gaze_model_sha256[:12]}, this run's model is {onnx_sha256[:12]}: calibrate "
                          "the driver again with this model")
    return correction
