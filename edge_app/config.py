"""The application's settings: one YAML file (``--config``), every key checked.

Unknown keys and out-of-range values are rejected with one line naming the key, e.g.
``edge.yaml: attention.warning_after_s: Input should be greater than 0``. Relative paths in
the file are resolved against the file's folder. ``calibration/edge_default.yaml`` lists every
key with its default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from edge_app.anomaly import AnomalySettings
from edge_app.attention import AttentionSettings
from edge_app.calibrate.gaze_correction import DriverSettings
from edge_app.degraded import DegradedSettings
from edge_app.driver_select import CabinSettings, DriverSelectionSettings
from edge_app.eye_visibility import EyeSettings
from edge_app.integrity import IntegritySettings
from edge_app.normalisation import DEFAULT_CROP_WIDTH_MM, DEFAULT_DISTANCE_MM
from edge_app.smoothing import OneEuroSettings
from securegaze.bundle.runtime import full_provider_name
from securegaze.errors import ConfigError
from securegaze.io import read_yaml
from securegaze.validation import StrictModel, validation_line


class CameraSettings(StrictModel):
    """``calibration``: intrinsics YAML (None: focal = frame width, centre = frame centre);
    ``width`` x ``height``: the resolution asked of a camera, px; ``mirrored``: the camera's image
    is mirrored left-right (a camera facing the occupants shows the car's left on the image's right
    when it is not; :func:`edge_app.driver_select.driver_image_side`)."""

    calibration: Path | None = None
    width: int = Field(640, ge=64, le=4096)
    height: int = Field(480, ge=48, le=4096)
    mirrored: bool = False


class FaceSettings(StrictModel):
    """MediaPipe thresholds in [0, 1], the narrowest face trusted, px, and the most faces looked
    for (2: a driver and a passenger; 1: one face, as before driver selection)."""

    min_detection_confidence: float = Field(0.5, ge=0, le=1)
    min_tracking_confidence: float = Field(0.5, ge=0, le=1)
    min_face_width_px: float = Field(40.0, ge=0, le=4096)
    max_faces: int = Field(2, ge=1, le=8)


class NormalisationSettings(StrictModel):
    """Virtual camera distance and the face width across the crop, mm (edge_app.normalisation);
    ``oversample``: warp at this multiple of the crop size, then area-average down."""

    distance_mm: float = Field(DEFAULT_DISTANCE_MM, gt=50, le=5000)
    crop_width_mm: float = Field(DEFAULT_CROP_WIDTH_MM, gt=20, le=1000)
    oversample: int = Field(2, ge=1, le=8)


class EngineSettings(StrictModel):
    """``kind``: onnxruntime | tensorrt; ``providers``: "auto" or a list (cpu, cuda, tensorrt or
    full ONNX Runtime names); ``threads``: ONNX Runtime intra-op threads (0: its default);
    ``tensorrt_engine``: the engine file for kind tensorrt; ``cache_dir``: engine cache of ONNX
    Runtime's TensorRT provider (None: ``$SECUREGAZE_ENGINE_CACHE`` or ~/.cache/securegaze-edge/engines)."""

    kind: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    providers: Literal["auto"] | list[str] = "auto"
    threads: int = Field(1, ge=0, le=256)
    tensorrt_engine: Path | None = None
    cache_dir: Path | None = None

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, providers):
        # A typo is refused with the file, before the integrity check writes anything next to the model.
        if providers != "auto":
            for name in providers:
                try:
                    full_provider_name(name)
                except ConfigError as exc:
                    raise ValueError(str(exc)) from None
        return providers


class CaptureSettings(StrictModel):
    """``drop_stale``: auto (live sources only) | always | never; ``queue_size`` for recorded sources."""

    drop_stale: Literal["auto", "always", "never"] = "auto"
    queue_size: int = Field(2, ge=1, le=1000)


class SyntheticSettings(StrictModel):
    """The synthetic driver: script, frame rate (also used for image folders), seed, frame size
    px, camera-to-face distance mm, the driver's personal gaze offset (pitch, yaw) degrees
    (:mod:`edge_app.synthetic_driver`: the eyes show the gaze turned by it), the share of each
    gaze shift the head makes (0.3: mostly the eyes; 0.6: an "owl" driver), and ``passenger``: a
    second person on the passenger seat, on the other side of ``cabin.drive_side`` (the driver then
    moves to its own side of the image); ``conditions``: cabin conditions of the renderer the driver
    wears or the camera sees (``clear_glasses_thin``, ``sunglasses_dark``, ``night_ir``, ...:
    :mod:`securegaze.data.synthetic.conditions`)."""

    script: Literal["full", "short"] = "full"
    fps: float = Field(30.0, ge=1, le=240)
    seed: int = Field(0, ge=0)
    width: int = Field(640, ge=64, le=4096)
    height: int = Field(480, ge=48, le=4096)
    distance_mm: float = Field(700.0, ge=300, le=1500)
    personal_offset_deg: tuple[float, float] = (0.0, 0.0)
    head_follow: float = Field(0.3, ge=0, le=1)
    passenger: bool = False
    conditions: tuple[str, ...] = ()

    @field_validator("conditions")
    @classmethod
    def _known_conditions(cls, names):
        from securegaze.data.synthetic.condition_names import check_conditions

        try:
            return check_conditions(names)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("personal_offset_deg")
    @classmethod
    def _offset_range(cls, offset):
        if not all(-20.0 <= v <= 20.0 for v in offset):
            raise ValueError(f"must be two angles within +-20 deg, got {list(offset)}")
        return offset


class EdgeConfig(StrictModel):
    """Every setting of ``edge-app run``; see each section's class."""

    model: Path | None = None
    zones: Path | None = None
    camera: CameraSettings = CameraSettings()
    face: FaceSettings = FaceSettings()
    cabin: CabinSettings = CabinSettings()
    driver_selection: DriverSelectionSettings = DriverSelectionSettings()
    normalisation: NormalisationSettings = NormalisationSettings()
    engine: EngineSettings = EngineSettings()
    smoothing: OneEuroSettings = OneEuroSettings()
    attention: AttentionSettings = AttentionSettings()
    degraded: DegradedSettings = DegradedSettings()
    eyes: EyeSettings = EyeSettings()
    anomaly: AnomalySettings = AnomalySettings()
    integrity: IntegritySettings = IntegritySettings()
    capture: CaptureSettings = CaptureSettings()
    synthetic: SyntheticSettings = SyntheticSettings()
    driver: DriverSettings = DriverSettings()


def _resolve_paths(data: dict, base: Path) -> dict:
    """Relative paths of the known path settings, made relative to the config file's folder."""
    def fix(section: dict | None, key: str) -> None:
        if isinstance(section, dict) and isinstance(section.get(key), str):
            p = Path(section[key]).expanduser()
            section[key] = str(p if p.is_absolute() else base / p)

    fix(data, "model")
    fix(data, "zones")
    fix(data.get("camera"), "calibration")
    fix(data.get("engine"), "tensorrt_engine")
    fix(data.get("engine"), "cache_dir")
    fix(data.get("integrity"), "audit_db")
    fix(data.get("driver"), "store")
    return data


def load_config(path: str | os.PathLike | None) -> EdgeConfig:
    """The config in ``path`` (None: all defaults); one :class:`ConfigError` line for a bad file."""
    if path is None:
        return EdgeConfig()
    path = Path(path)
    data = read_yaml(path, "config")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got a YAML {type(data).__name__}")
    try:
        return EdgeConfig.model_validate(_resolve_paths(data, path.resolve().parent))
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_line(exc)}") from None
