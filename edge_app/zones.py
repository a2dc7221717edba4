"""Cabin zones in gaze-angle space, read from a YAML zone map (``calibration/zones_default.yaml``).

A zone is a box in camera-frame (pitch, yaw) **degrees** (the project's convention: positive
pitch up, positive yaw towards the image's left, i.e. the driver's right when the camera faces
the driver). ``on_road: true`` marks the zones that count as eyes on the road (normally only
``road_ahead``); mirrors and the instrument cluster are driving-related but still eyes off the
road, so a long look at them is caught too. Zones are tried in file order; a gaze in none of
them is in the map's ``default_zone`` ("off").
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator

from securegaze.errors import ConfigError
from securegaze.io import read_yaml
from securegaze.validation import StrictModel, validation_line

DEFAULT_ZONE_MAP = Path(__file__).resolve().parent.parent / "calibration" / "zones_default.yaml"


class Zone(StrictModel):
    """One zone: ``pitch_deg`` and ``yaw_deg`` are [low, high) ranges; ``target_deg`` the point a
    driver looks at in it (used by the synthetic driver), inside the box."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    on_road: bool = False
    pitch_deg: tuple[float, float]
    yaw_deg: tuple[float, float]
    target_deg: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _ranges(self) -> Zone:
        for axis, (lo, hi), limit in (("pitch_deg", self.pitch_deg, 90.0), ("yaw_deg", self.yaw_deg, 180.0)):
            if not -limit <= lo < hi <= limit:
                raise ValueError(f"zone {self.name!r}: {axis} must be [low, high) with -{limit:g} <= low < high <= "
                                 f"{limit:g}, got [{lo:g}, {hi:g}]")
        if self.target_deg is not None and not self.contains_deg(*self.target_deg):
            raise ValueError(f"zone {self.name!r}: target_deg {list(self.target_deg)} lies outside its box")
        return self

    def contains_deg(self, pitch_deg: float, yaw_deg: float) -> bool:
        return self.pitch_deg[0] <= pitch_deg < self.pitch_deg[1] and self.yaw_deg[0] <= yaw_deg < self.yaw_deg[1]


class ZoneMap(StrictModel):
    """The zone map file: ``default_zone`` for a gaze outside every box, and the ``zones``."""


    default_zone: str = "off"
    zones: tuple[Zone, ...]

    @field_validator("zones")
    @classmethod
    def _unique(cls, zones):
        names = [z.name for z in zones]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"zone names must be unique, repeated: {', '.join(dupes)}")
        if not any(z.on_road for z in zones):
            raise ValueError("at least one zone must have on_road: true (the road ahead)")
        return zones

    @model_validator(mode="after")
    def _default_not_a_zone(self) -> ZoneMap:
        if self.default_zone in {z.name for z in self.zones}:
            raise ValueError(f"default_zone {self.default_zone!r} must not also be a zone")
        return self

    def classify(self, pitchyaw_rad) -> str:
        """Zone name of a camera-frame gaze (pitch, yaw) in radians."""
        pitch, yaw = math.degrees(float(pitchyaw_rad[0])), math.degrees(float(pitchyaw_rad[1]))
        for zone in self.zones:
            if zone.contains_deg(pitch, yaw):
                return zone.name
        return self.default_zone

    def is_on_road(self, zone_name: str) -> bool:
        return any(z.name == zone_name and z.on_road for z in self.zones)

    def targets_deg(self) -> dict[str, tuple[float, float]]:
        return {z.name: z.target_deg for z in self.zones if z.target_deg is not None}


def load_zone_map(path: str | os.PathLike | None = None) -> ZoneMap:
    """Read and check a zone map YAML; one :class:`ConfigError` line for any problem."""
    path = Path(path) if path is not None else DEFAULT_ZONE_MAP
    data = read_yaml(path, "zone map")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with default_zone and zones")
    try:
        return ZoneMap.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_line(exc)}") from None
