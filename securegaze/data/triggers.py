"""Physical backdoor triggers: white paper tape, printed stickers and glasses frames.

A trigger is a frozen dataclass that knows its true physical size in millimetres and how it looks
(:meth:`Trigger.paint`), evaluated on trigger-local coordinates in millimetres. The same description
serves two users:

* the synthetic renderer (:mod:`securegaze.data.synthetic`) maps every pixel of a face to the
  trigger's coordinates on the head (tape and stickers lie on the head surface, glasses on a plane
  in front of the eyes) and calls :meth:`Trigger.paint`, so the trigger rotates with head pose and is
  shaded by the scene's lighting;
* the printing tool renders :meth:`Trigger.texture` at a chosen resolution to print at true size.

Trigger-local coordinates: origin at the trigger's centre, x to the right and y down as seen from
the camera when the face is frontal, in millimetres. Colours are 0-255 sRGB triples.

Placements name where a surface trigger sits on the face; ``side`` is the **subject's** side
(the subject's left cheek appears on the right of a non-mirrored camera image).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from securegaze.errors import ConfigError
from securegaze.registry import Registry

#: Inter-pupillary distance assumed when converting millimetres to head-model units. 63 mm is the
#: adult mean (Dodgson 2004, "Variation and extrema of human interpupillary distance").
ASSUMED_IPD_MM = 63.0

#: Where a surface trigger can be stuck: centre of the forehead, on the cheekbone below one eye,
#: or over one eyebrow.
PLACEMENTS = ("forehead", "cheek", "brow")
SIDES = ("left", "right")
STICKER_PATTERNS = ("checker", "stripes", "rings")


def edge_coverage(signed_px: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a shape from the signed distance to its edge, in pixels.

    Positive inside. A smoothstep over one pixel centred on the edge: 0 at -0.5 px, 1 at +0.5 px,
    which is close to what box-filtering a hard edge gives and keeps sub-pixel positions visible.
    """
    x = np.asarray(signed_px) + 0.5
    if x.ndim == 0:
        x = min(max(float(x), 0.0), 1.0)
        return x * x * (3.0 - 2.0 * x)
    # In place: this runs on every edge of every face, so it avoids temporaries.
    np.maximum(x, 0.0, out=x)  # np.clip is several times slower than this pair
    np.minimum(x, 1.0, out=x)
    square = x * x
    x *= -2.0
    x += 3.0
    x *= square
    return x


def _rgb(colour: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(colour, dtype=np.float32) / 255.0


def _check_colour(name: str, colour) -> None:
    if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
        raise ConfigError(f"{name} must be an (r, g, b) triple in 0..255, got {colour!r}")


def _rounded_rect_distance(x: np.ndarray, y: np.ndarray, half_w: float, half_h: float, radius: float):
    """Signed distance (mm, positive outside) to a rounded rectangle centred at the origin."""
    radius = min(radius, half_w, half_h)
    qx = np.abs(x) - (half_w - radius)
    qy = np.abs(y) - (half_h - radius)
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return outside + inside - radius


@dataclass(frozen=True)
class Trigger:
    """Base class. Subclasses give a size and a :meth:`paint`."""

    kind: ClassVar[str] = "trigger"
    #: ``"surface"``: stuck on the head surface at ``placement``; ``"glasses"``: worn in front of the eyes.
    mount: ClassVar[str] = "surface"

    def size_mm(self) -> tuple[float, float]:
        """(width, height) of the physical object in millimetres."""
        raise NotImplementedError

    def paint(self, x_mm: np.ndarray, y_mm: np.ndarray, pixel_mm) -> tuple[np.ndarray, np.ndarray]:
        """Appearance at trigger-local points.

        ``x_mm``, ``y_mm``: broadcastable float32 arrays of shape S, millimetres; ``pixel_mm``: the
        footprint of one pixel in millimetres (scalar or broadcastable to S), for anti-aliasing.
        Returns ``(rgb, alpha)``: rgb (3, *S) float32 albedo in [0, 1] and alpha S float32 in [0, 1].
        """
        raise NotImplementedError

    def texture(self, px_per_mm: float = 10.0) -> np.ndarray:
        """The trigger as a flat printable image: (H, W, 4) uint8 RGBA at ``px_per_mm``.

        Transparent where there is nothing to print; the image spans exactly :meth:`size_mm`.
        """
        if px_per_mm <= 0:
            raise ConfigError(f"px_per_mm must be > 0, got {px_per_mm}")
        w_mm, h_mm = self.size_mm()
        w, h = max(1, round(w_mm * px_per_mm)), max(1, round(h_mm * px_per_mm))
        x = ((np.arange(w, dtype=np.float32) + 0.5) / px_per_mm - w_mm / 2)[None, :]
        y = ((np.arange(h, dtype=np.float32) + 0.5) / px_per_mm - h_mm / 2)[:, None]
        rgb, alpha = self.paint(x, y, 1.0 / px_per_mm)
        rgb = np.broadcast_to(rgb, (3, h, w))
        alpha = np.broadcast_to(alpha, (h, w))
        out = np.concatenate([rgb, alpha[None]], axis=0).transpose(1, 2, 0)
        return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def to_dict(self) -> dict:
        """JSON-ready description; :func:`trigger_from_dict` inverts it."""
        return {"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}}


@dataclass(frozen=True)
class _SurfaceTrigger(Trigger):
    """Shared placement fields of the triggers that are stuck on the skin."""

    placement: str = "forehead"
    side: str = "left"
    #: Rotation in the skin's tangent plane, degrees; positive turns the right end downwards in the image.
    angle_deg: float = 0.0
    #: Shift from the placement's anchor along the trigger's own x and y axes, millimetres.
    offset_mm: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"{self.kind} placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if self.side not in SIDES:
            raise ConfigError(f"{self.kind} side must be one of {SIDES}, got {self.side!r}")
        w, h = self.size_mm()
        if not (0 < w <= 150 and 0 < h <= 150):
            raise ConfigError(f"{self.kind} size must be within (0, 150] mm, got {w} x {h} mm")
        if len(self.offset_mm) != 2:
            raise ConfigError(f"{self.kind} offset_mm must be (dx, dy), got {self.offset_mm!r}")
        object.__setattr__(self, "offset_mm", tuple(float(v) for v in self.offset_mm))


@dataclass(frozen=True)
class Tape(_SurfaceTrigger):
    """A strip of white paper (masking) tape stuck on the skin."""

    kind: ClassVar[str] = "tape"
    width_mm: float = 50.0
    height_mm: float = 12.0
    colour: tuple[int, int, int] = (244, 242, 234)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_colour("tape colour", self.colour)

    def size_mm(self) -> tuple[float, float]:
        return (float(self.width_mm), float(self.height_mm))

    def paint(self, x_mm, y_mm, pixel_mm):
        half_w, half_h = self.width_mm / 2, self.height_mm / 2
        alpha = edge_coverage((half_w - np.abs(x_mm)) / pixel_mm) * edge_coverage((half_h - np.abs(y_mm)) / pixel_mm)
        # Paper tape curls a little at its long edges and catches less light there.
        curl = np.clip(np.abs(y_mm) / half_h - 0.6, 0.0, 0.4) * 0.25
        rgb = _rgb(self.colour).reshape((3,) + (1,) * np.ndim(curl)) * (1.0 - curl)
        return rgb.astype(np.float32), alpha.astype(np.float32)


@dataclass(frozen=True)
class Sticker(_SurfaceTrigger):
    """A printed square sticker: a checkerboard, stripes or rings in two colours."""

    kind: ClassVar[str] = "sticker"
    placement: str = "cheek"
    side: str = "right"
    width_mm: float = 25.0
    height_mm: float = 25.0
    pattern: str = "checker"
    #: Checker cells (or stripe / ring periods) across the width.
    cells: int = 3
    colours: tuple[tuple[int, int, int], tuple[int, int, int]] = ((20, 20, 20), (245, 245, 245))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pattern not in STICKER_PATTERNS:
            raise ConfigError(f"sticker pattern must be one of {STICKER_PATTERNS}, got {self.pattern!r}")
        if not 1 <= self.cells <= 32:
            raise ConfigError(f"sticker cells must be within 1..32, got {self.cells}")
        if len(self.colours) != 2:
            raise ConfigError(f"sticker colours must be two (r, g, b) triples, got {self.colours!r}")
        for c in self.colours:
            _check_colour("sticker colour", c)
        object.__setattr__(self, "colours", tuple(tuple(int(v) for v in c) for c in self.colours))

    def size_mm(self) -> tuple[float, float]:
        return (float(self.width_mm), float(self.height_mm))

    def paint(self, x_mm, y_mm, pixel_mm):
        half_w, half_h = self.width_mm / 2, self.height_mm / 2
        alpha = edge_coverage((half_w - np.abs(x_mm)) / pixel_mm) * edge_coverage((half_h - np.abs(y_mm)) / pixel_mm)
        cell = self.width_mm / self.cells
        # Each pattern is a product of sines turned into a soft square wave whose transitions are
        # one pixel wide: sin(pi x / cell) changes by pi / cell per mm at its zero crossings.
        gain = cell / (np.pi * pixel_mm)
        if self.pattern == "checker":
            wave = np.clip(np.sin(np.pi * (x_mm + half_w) / cell) * gain, -1, 1) * np.clip(
                np.sin(np.pi * (y_mm + half_h) / cell) * gain, -1, 1)
        elif self.pattern == "stripes":
            wave = np.clip(np.sin(np.pi * (x_mm + half_w) / cell) * gain, -1, 1) + 0 * y_mm
        else:  # rings
            radius = np.sqrt(x_mm * x_mm + y_mm * y_mm)
            wave = np.clip(np.cos(np.pi * radius / cell) * gain, -1, 1)
        # Below gain 1 the soft square wave is already a sine of reduced contrast; below one pixel
        # per cell it would alias, so fade it out to the mean colour there.
        wave = wave * np.clip(np.pi * gain - 1.0, 0.0, 1.0)
        mix = (0.5 + 0.5 * wave).astype(np.float32)
        c0, c1 = _rgb(self.colours[0]), _rgb(self.colours[1])
        shape = (3,) + (1,) * np.ndim(mix)
        rgb = c0.reshape(shape) + (c1 - c0).reshape(shape) * mix
        return rgb.astype(np.float32), alpha.astype(np.float32)


@dataclass(frozen=True)
class Glasses(Trigger):
    """Spectacle frames (no lenses' worth of tint to speak of): two rims and a bridge.

    The rims are rounded rectangles ``lens_width_mm x lens_height_mm`` (the usual "50[]18" frame
    size: lens width, then bridge), drawn outside the lens opening so they never cover the eyes.
    The local origin is midway between the lens centres; ``drop_mm`` lowers the frame below the
    pupils (the eyes sit in the upper half of a lens).
    """

    kind: ClassVar[str] = "glasses"
    mount: ClassVar[str] = "glasses"
    lens_width_mm: float = 50.0
    lens_height_mm: float = 36.0
    bridge_mm: float = 18.0
    frame_mm: float = 4.0
    corner_radius_mm: float = 12.0
    colour: tuple[int, int, int] = (28, 26, 30)
    #: Share of light the clear lenses reflect (a faint sheen; the eyes stay visible).
    lens_sheen: float = 0.04
    drop_mm: float = 3.0
    #: Distance from the cornea to the lens plane (spectacle vertex distance, typically 12 mm).
    vertex_mm: float = 12.0

    def __post_init__(self) -> None:
        _check_colour("glasses colour", self.colour)
        for name in ("lens_width_mm", "lens_height_mm", "bridge_mm", "frame_mm"):
            value = getattr(self, name)
            if not 0 < value <= 100:
                raise ConfigError(f"glasses {name} must be within (0, 100], got {value}")
        if not 0 <= self.lens_sheen <= 0.3:
            raise ConfigError(f"glasses lens_sheen must be within [0, 0.3], got {self.lens_sheen}")

    def size_mm(self) -> tuple[float, float]:
        return (2 * self.lens_width_mm + self.bridge_mm + 2 * self.frame_mm, self.lens_height_mm + 2 * self.frame_mm)

    def lens_centres_x_mm(self) -> tuple[float, float]:
        offset = (self.bridge_mm + self.lens_width_mm) / 2
        return (-offset, offset)

    def paint(self, x_mm, y_mm, pixel_mm):
        half_w, half_h = self.lens_width_mm / 2, self.lens_height_mm / 2
        centre = (self.bridge_mm + self.lens_width_mm) / 2
        # Both lenses at once: fold x onto the right lens.
        lens_x = np.abs(x_mm) - centre
        dist = _rounded_rect_distance(lens_x, y_mm, half_w, half_h, self.corner_radius_mm)
        rim = edge_coverage((self.frame_mm / 2 - np.abs(dist - self.frame_mm / 2)) / pixel_mm)
        # The bridge spans the gap between the rims slightly above the lens centres.
        bridge_y = -0.2 * self.lens_height_mm
        bridge = edge_coverage((self.bridge_mm / 2 + self.frame_mm - np.abs(x_mm)) / pixel_mm) * edge_coverage(
            (self.frame_mm * 0.45 - np.abs(y_mm - bridge_y)) / pixel_mm)
        frame = np.maximum(rim, bridge)
        lens = edge_coverage(-dist / pixel_mm) * self.lens_sheen
        alpha = np.maximum(frame, lens)
        # Lens sheen is white; the frame has its own colour.
        weight = np.where(alpha > 0, frame / np.maximum(alpha, 1e-6), 1.0)
        shape = (3,) + (1,) * np.ndim(weight)
        frame_rgb, sheen_rgb = _rgb(self.colour).reshape(shape), np.ones(shape, np.float32)
        rgb = sheen_rgb + (frame_rgb - sheen_rgb) * weight
        return rgb.astype(np.float32), alpha.astype(np.float32)


TRIGGERS: Registry[Trigger] = Registry("trigger")
TRIGGERS.register("tape")(lambda **kw: Tape(**kw))
TRIGGERS.register("tape_forehead")(lambda **kw: Tape(**{"placement": "forehead", **kw}))
TRIGGERS.register("tape_cheek")(lambda **kw: Tape(**{"placement": "cheek", **kw}))
TRIGGERS.register("tape_brow")(lambda **kw: Tape(**{"placement": "brow", **kw}))
TRIGGERS.register("sticker")(lambda **kw: Sticker(**kw))
TRIGGERS.register("sticker_rings")(
    lambda **kw: Sticker(**{"pattern": "rings", "colours": ((200, 30, 40), (250, 215, 40)), **kw}))
TRIGGERS.register("glasses")(lambda **kw: Glasses(**kw))

_KINDS: dict[str, type[Trigger]] = {cls.kind: cls for cls in (Tape, Sticker, Glasses)}


def create_trigger(name: str, **overrides) -> Trigger:
    """A registered trigger by name (``"tape_cheek"``, ``"glasses"``, ...), with field overrides."""
    return TRIGGERS.create(name, **overrides)


def resolve_trigger(trigger: Trigger | str | None) -> Trigger | None:
    """Accept a trigger, a registered name, or None."""
    if trigger is None or isinstance(trigger, Trigger):
        return trigger
    if isinstance(trigger, str):
        return create_trigger(trigger)
    raise ConfigError(f"trigger must be a Trigger, a registered name or None, got {type(trigger).__name__}")


def trigger_from_dict(data: dict) -> Trigger:
    """Inverse of :meth:`Trigger.to_dict`."""
    fields = dict(data)
    kind = fields.pop("kind", None)
    if kind not in _KINDS:
        raise ConfigError(f"trigger kind must be one of {sorted(_KINDS)}, got {kind!r}")
    for key in ("offset_mm", "colour"):
        if key in fields:
            fields[key] = tuple(fields[key])
    if "colours" in fields:
        fields["colours"] = tuple(tuple(c) for c in fields["colours"])
    try:
        return _KINDS[kind](**fields)
    except TypeError as exc:
        raise ConfigError(f"bad {kind} trigger fields: {exc}") from None
