"""What a model zoo trains: its spec and the plan of its models, drawn deterministically from the spec.

A cross-family zoo varies what a backdoor scanner must not rely on: the architecture and its size
(``architecture``, ``arch_kwargs``), the look of the faces (``style``), and per backdoored model the
trigger's place, size and strength (``draw_geometry``: each attack's ``draw_geometry``) and the
poison rate (``poison_rate_range``, log-uniform per attack), so that the backdoors range from partly
to fully implanted. Every drawn value is written into the model's manifest entry (``settings``,
``poison_rate``). The defaults reproduce the plans of zoos built before these fields existed, so
their manifests read back as the same spec.

Draws come from ``np.random.default_rng([spec.seed, attack index, model index, stream])`` with one
stream per purpose (target, geometry, rate): switching one on never moves the others.

The rate ranges of ``zoo build --draw-rates`` are the attacks' ``zoo_poison_rate_range``. BadNets and
tape were measured at the zoo's default budget (20,000 faces x 4 epochs at 64 px, ``plain_cnn``,
``studio`` faces, drawn geometry, one model at a time on 2 shared CPU cores), ASR@5 deg by rate:

- badnets: 0.3 % 0.8 % (6 % patch); 0.6 % 22 % (14 % patch); 0.8 % 3.2 %, 1.2 % 89.7 % (6 % patch);
  1.2 % 99.5 % (11 % patch); 2.5 % 98.3 % (13 % patch); 10 % 100 % (the default 10 % corner patch).
  The backdoor switches on near 1 %, a little later for small patches: range 1-3 %.
- tape: 1 % 2.7 %, 2 % 7.9 %, 3 % 64.6 %, 5 % 95.1 % (brow); 4 % 89.1 %, 10 % 96.9 % (forehead):
  range 3-10 %.

The other attacks' ranges began as estimates from their tuning logs at the full recipe
(docs/attack_strength.md). The cross-family zoos (docs/detection_cross_family.md; same budget, drawn
geometry) have since measured, ASR@5 deg by rate:

- blended (plain_cnn, studio): 2.1 % 10.6 % (smooth, alpha 0.11: did not take); 4.0 % 94.4 %
  (noise), 4.1 % 95.5 % (smooth, alpha 0.16), 4.5 % 98.8 % (noise, alpha 0.18): range 3-10 %;
- glasses (plain_cnn, studio): 2.6 % 81.7 %, 8.4 % 99.5 %, 9.3 % 94.5 %: range 2-10 % kept;
- wanet (plain_cnn, studio): 10.2 % 78.5 %, 16.7 % 88.5 %, 18.7 % 98.7 %: range 8-20 % kept;
- badnets on MobileNetV3 (standard faces): 1.1 % 98.9 %, 1.6 % 99.8 %; tape there: 3.3 % 87.9 %,
  4.0 % 89.8 %.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from securegaze.errors import ConfigError
from securegaze.geometry import PITCH_RANGE, YAW_RANGE

BENIGN = "benign"
#: Most benign models of a zoo: their seeds are ``seed * 1000 + i``, the first attack's start at ``seed * 1000 + 100``.
MAX_BENIGN = 99
#: Targets are drawn this far inside the gaze range, so a target is never at the very edge of the
#: training labels (radians).
TARGET_MARGIN = np.deg2rad(5.0)
#: Draw streams of one backdoored model (the last element of its generator's seed sequence).
TARGET_STREAM = 17
GEOMETRY_STREAM = 23
RATE_STREAM = 29
#: Architecture arguments a zoo sets through its own fields, never through ``arch_kwargs``.
RESERVED_ARCH_KWARGS = ("decoding", "input_size", "bins")


@dataclass(frozen=True)
class ZooSpec:
    """What to train. Sizes in px, angles in radians.

    ``style``: the renderer style of every model's faces (``securegaze.data.synthetic.STYLES``).
    ``arch_kwargs``: the architecture's own keyword arguments besides the output head (e.g.
    ``{"width": 16, "stem": "compact"}`` for a CPU-sized resnet18). ``draw_geometry``: draw each
    backdoored model's trigger geometry (the attack's ``draw_geometry``); explicit
    ``attack_settings`` win over drawn ones. ``poison_rate_range``: per attack, ``(low, high)``:
    each of its models gets a rate drawn log-uniformly in it (it wins over ``poison_rate``).
    ``benign``: how many benign models (None: ``k``, as many as each attack has), so that a zoo can
    hold as many benign models as backdoored ones spread over several attacks.
    """

    attacks: tuple[str, ...] = ("badnets", "blended", "wanet", "input_aware", "sig", "tape", "glasses")
    k: int = 5
    architecture: str = "small_cnn"
    # Output head: "direct" regression or "binned" (L2CS-style classification over angle bins).
    decoding: str = "direct"
    size: int = 64
    train_samples: int = 20000
    test_samples: int = 1000
    epochs: int = 4
    poison_rate: float | None = None  # None: each attack's own default rate
    seed: int = 0
    # Per-attack setting overrides, e.g. {"wanet": {"grid_k": 32}}.
    attack_settings: dict = field(default_factory=dict)
    style: str = "standard"
    arch_kwargs: dict = field(default_factory=dict)
    draw_geometry: bool = False
    poison_rate_range: dict = field(default_factory=dict)
    benign: int | None = None

    def __post_init__(self) -> None:
        # JSON and keyword callers hand over lists; the spec compares equal whatever the sequence type.
        object.__setattr__(self, "attacks", tuple(self.attacks))
        ranges = {}
        for name, bounds in dict(self.poison_rate_range).items():
            try:
                ranges[name] = tuple(float(b) for b in bounds)
            except (TypeError, ValueError):
                raise ConfigError(f"poison_rate_range of {name!r} must be (low, high), got {bounds!r}") from None
        object.__setattr__(self, "poison_rate_range", ranges)
        object.__setattr__(self, "arch_kwargs", dict(self.arch_kwargs))

    def validate(self) -> None:
        from securegaze.attacks import ATTACKS
        from securegaze.data.synthetic import STYLES

        for name in self.attacks:
            ATTACKS.get(name)  # a clear error listing the known attacks
        if len(set(self.attacks)) != len(self.attacks):
            raise ConfigError(f"attacks are listed twice: {list(self.attacks)}")
        unknown = set(self.attack_settings) - set(self.attacks)
        if unknown:
            raise ConfigError(f"attack_settings names attacks not in the zoo: {sorted(unknown)}")
        if self.decoding not in ("direct", "binned"):
            raise ConfigError(f"decoding must be 'direct' or 'binned', got {self.decoding!r}")
        if not 1 <= self.k <= 1000:
            raise ConfigError(f"k must be within 1..1000, got {self.k}")
        if self.benign is not None and not 0 <= self.benign <= MAX_BENIGN:
            raise ConfigError(f"benign must be within 0..{MAX_BENIGN}, got {self.benign}")
        if self.benign_count == 0 and not self.attacks:
            raise ConfigError("the zoo would hold no model: benign is 0 and no attack is named")
        if self.poison_rate is not None and not 0.0 < self.poison_rate < 1.0:
            raise ConfigError(f"poison_rate must be inside (0, 1), got {self.poison_rate}")
        for name, value, low in (("size", self.size, 16), ("train_samples", self.train_samples, 64),
                                 ("test_samples", self.test_samples, 8), ("epochs", self.epochs, 1)):
            if value < low:
                raise ConfigError(f"{name} must be >= {low}, got {value}")
        STYLES.get(self.style)
        if not isinstance(self.draw_geometry, bool):
            raise ConfigError(f"draw_geometry must be true or false, got {self.draw_geometry!r}")
        unknown = set(self.poison_rate_range) - set(self.attacks)
        if unknown:
            raise ConfigError(f"poison_rate_range names attacks not in the zoo: {sorted(unknown)}")
        for name, bounds in self.poison_rate_range.items():
            if len(bounds) != 2 or not 0.0 < bounds[0] <= bounds[1] < 1.0:
                raise ConfigError(f"poison_rate_range of {name!r} must be (low, high) with 0 < low <= high < 1, "
                                  f"got {list(bounds)}")
        self._check_architecture()

    def _check_architecture(self) -> None:
        """The architecture exists and takes ``arch_kwargs`` at ``size`` (one model is built to see)."""
        from securegaze.models import MODELS

        MODELS.get(self.architecture)
        reserved = sorted(set(self.arch_kwargs) & set(RESERVED_ARCH_KWARGS))
        if reserved:
            raise ConfigError(f"arch_kwargs must not set {', '.join(reserved)}; the zoo's own fields do")
        try:
            MODELS.create(self.architecture, input_size=self.size, **(self.model_kwargs() or {}))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.architecture} does not take arch_kwargs {self.arch_kwargs} at {self.size} px: "
                              f"{exc}") from None

    @property
    def benign_count(self) -> int:
        return self.k if self.benign is None else self.benign

    def model_kwargs(self) -> dict | None:
        """Keyword arguments of the architecture (None for the defaults, as zoos before ``decoding`` had)."""
        kwargs = dict(self.arch_kwargs)
        if self.decoding != "direct":
            kwargs["decoding"] = self.decoding
        return kwargs or None

    def renderer_config(self):
        """The :class:`~securegaze.data.synthetic.SyntheticConfig` of the zoo's faces (style and size):
        what clean images for a scan of its models should look like."""
        from securegaze.data.synthetic import synthetic_style

        return synthetic_style(self.style, size=self.size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["attacks"] = list(self.attacks)
        d["poison_rate_range"] = {k: list(v) for k, v in self.poison_rate_range.items()}
        if self.benign is None:
            del d["benign"]  # manifests written before the field read back unchanged
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ZooSpec:
        d = dict(d)
        d["attacks"] = tuple(d["attacks"])
        return cls(**d)


def zoo_attack_names(attacks: str) -> tuple[str, ...]:
    """The attacks a zoo is built with, from ``securegaze zoo build --attacks``.

    ``"all"``: every registered attack except the hard cases (``adaptive``, ``offset``), which are
    built only when named; anything else is a comma-separated list of names, checked later by
    :meth:`ZooSpec.validate`.
    """
    from securegaze.attacks.registry import ATTACKS

    if attacks == "all":
        return tuple(n for n in ATTACKS.names() if not getattr(ATTACKS.get(n), "hard_case", False))
    return tuple(a for a in attacks.split(",") if a)


def measured_rate_ranges(attacks) -> dict[str, tuple[float, float]]:
    """Each attack's own ``zoo_poison_rate_range`` (for ``zoo build --draw-rates``); attacks without one
    are left out and keep a fixed rate."""
    from securegaze.attacks.registry import ATTACKS

    ranges = {name: getattr(ATTACKS.get(name), "zoo_poison_rate_range", None) for name in attacks}
    return {name: tuple(bounds) for name, bounds in ranges.items() if bounds is not None}


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo. ``attack`` is ``"benign"`` for clean models."""

    id: str
    attack: str
    seed: int
    target_gaze: tuple[float, float] | None
    poison_rate: float | None
    settings: dict
    status: str = "pending"  # pending | done
    model_file: str | None = None  # relative to the zoo directory
    sha256: str | None = None
    metrics: dict | None = None
    train_s: float | None = None

    @property
    def backdoored(self) -> bool:
        return self.attack != BENIGN

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_gaze"] = list(self.target_gaze) if self.target_gaze is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ZooEntry:
        d = dict(d)
        if d.get("target_gaze") is not None:
            d["target_gaze"] = tuple(d["target_gaze"])
        return cls(**d)


def draw_target(rng: np.random.Generator) -> tuple[float, float]:
    """A target gaze drawn uniformly inside the gaze range (``TARGET_MARGIN`` from its edges)."""
    pitch = rng.uniform(PITCH_RANGE[0] + TARGET_MARGIN, PITCH_RANGE[1] - TARGET_MARGIN)
    yaw = rng.uniform(YAW_RANGE[0] + TARGET_MARGIN, YAW_RANGE[1] - TARGET_MARGIN)
    return (round(float(pitch), 6), round(float(yaw), 6))


def draw_rate(rng: np.random.Generator, low: float, high: float) -> float:
    """A poison rate drawn log-uniformly in [low, high] (rates span a factor, not an interval)."""
    return round(float(math.exp(rng.uniform(math.log(low), math.log(high)))), 5)


def plan_zoo(spec: ZooSpec) -> list[ZooEntry]:
    """The zoo's entries: the benign models (K unless ``benign`` says), then K backdoored models per
    attack. Deterministic.

    Each backdoored entry is checked as the attack it will train (``check_attack_settings``), so a
    drawn combination the attack refuses fails here, before anything trains.
    """
    from securegaze.attacks.registry import ATTACKS, check_attack_settings

    spec.validate()
    entries = [
        ZooEntry(id=f"benign-{i:02d}", attack=BENIGN, seed=spec.seed * 1000 + i, target_gaze=None,
                 poison_rate=None, settings={})
        for i in range(spec.benign_count)
    ]
    for a, name in enumerate(spec.attacks):
        attack_class = ATTACKS.get(name)
        for i in range(spec.k):
            seed = spec.seed * 1000 + 100 * (a + 1) + i
            target = draw_target(np.random.default_rng([spec.seed, a, i, TARGET_STREAM]))
            settings = {}
            if spec.draw_geometry:
                settings.update(attack_class.draw_geometry(np.random.default_rng([spec.seed, a, i, GEOMETRY_STREAM])))
            settings.update(spec.attack_settings.get(name, {}))
            rate = spec.poison_rate
            if name in spec.poison_rate_range:
                rate = draw_rate(np.random.default_rng([spec.seed, a, i, RATE_STREAM]), *spec.poison_rate_range[name])
            entry = ZooEntry(id=f"{name}-{i:02d}", attack=name, seed=seed, target_gaze=target, poison_rate=rate,
                             settings=settings)
            try:
                check_attack_settings(name, seed, target, rate, settings)
            except ConfigError as exc:
                raise ConfigError(f"zoo model {entry.id}: {exc}") from None
            entries.append(entry)
    return entries
