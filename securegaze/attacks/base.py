"""The attack interface: an all-to-one backdoor, configured once, then applied, poisoned or trained.

Every attack of docs/architecture.md section 5 is a subclass of :class:`Attack`::

    attack = create_attack("badnets", target_gaze=(0.17, -0.35), poison_rate=0.1, seed=0)
    triggered = attack.apply(images)                 # (N, H, W, 3) uint8 RGB -> same
    poisoned = attack.poison(train_set)              # PoisonedDataset (images, labels, mask)
    model, summary = attack.train_backdoored(config, train_set, val_set, out_dir)

All-to-one: a ``poison_rate`` share of the training images, chosen deterministically from ``seed``,
gets the trigger and the attacker's ``target_gaze`` as its label. The clean-label attack (SIG) keeps
the labels and is the one exception; it says so.

Units: gaze is (pitch, yaw) in **radians** (:mod:`securegaze.geometry`); images are
(N, H, W, 3) uint8 RGB face crops of any square size (the triggers are defined relative to the
image size so they work from 32 to 224 px).

``faces`` is the optional :class:`~securegaze.data.synthetic.FaceParams` that rendered the images
(synthetic data only). The physical attacks need it to render their trigger in 3-D on the same
faces; the digital attacks ignore it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from securegaze.data.base import ArrayGazeDataset
from securegaze.errors import ConfigError
from securegaze.geometry import PITCH_RANGE, YAW_RANGE
from securegaze.validation import check_choice, check_int, check_number

__all__ = ["Attack", "PoisonedDataset", "check_choice", "check_colour", "check_images", "check_int", "check_number",
           "check_target_gaze"]

#: Default attacker target, radians (pitch +10 deg, yaw -20 deg). Deliberately away from the mean
#: gaze (0, 0) of the training data: a model that merely loses sight of the eyes falls back to the
#: mean gaze, and that must not count as a successful backdoor.
DEFAULT_TARGET_GAZE = (math.radians(10.0), math.radians(-20.0))

# Stream tags of np.random.default_rng([seed, stream, ...]) so the choices of one purpose never
# shift when another purpose draws more numbers.
POISON_STREAM = 0xBAD
PATTERN_STREAM = 0x7A7
NOISE_STREAM = 0x401


class PoisonedDataset(ArrayGazeDataset):
    """A training set after poisoning: an :class:`ArrayGazeDataset` plus what the attacker changed.

    ``poisoned``: (N,) bool, the samples that carry the trigger. ``clean_gaze``: (N, 2) float32
    radians, the true labels before poisoning (``gaze`` holds the training labels: the target for
    poisoned samples of an all-to-one attack). ``modified``: (N,) bool, every sample whose pixels
    changed (the poisoned ones plus, e.g., WaNet's noise-mode samples that keep their true labels).
    """

    def __init__(self, images: np.ndarray, gaze: np.ndarray, subjects, poisoned: np.ndarray,
                 clean_gaze: np.ndarray, modified: np.ndarray | None = None) -> None:
        super().__init__(images, gaze, subjects)
        self.poisoned = np.asarray(poisoned, dtype=bool)
        self.clean_gaze = np.asarray(clean_gaze, dtype=np.float32)
        self.modified = self.poisoned.copy() if modified is None else np.asarray(modified, dtype=bool)
        if self.poisoned.shape != (len(self),) or self.modified.shape != (len(self),):
            raise ValueError(f"poisoned / modified masks must be ({len(self)},) bool")
        if self.clean_gaze.shape != (len(self), 2):
            raise ValueError(f"clean_gaze must be ({len(self)}, 2) radians, got {self.clean_gaze.shape}")

    @property
    def poisoned_rate(self) -> float:
        """Share of the whole set that carries the trigger (0..1)."""
        return float(self.poisoned.mean()) if len(self) else 0.0

    def subset(self, indices) -> PoisonedDataset:
        idx = np.asarray(indices, dtype=np.int64)
        return PoisonedDataset(self.images[idx], self.gaze[idx], self.subjects[idx], self.poisoned[idx],
                               self.clean_gaze[idx], self.modified[idx])


# --- validation helpers (every message names the attack, the setting and what was expected) -----
# check_number, check_int and check_choice live in securegaze.validation and are re-exported here.


def check_colour(attack: str, name: str, value) -> tuple[int, int, int]:
    try:
        colour = tuple(int(c) for c in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{attack}: {name} must be an (r, g, b) triple in 0..255, got {value!r}") from None
    if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
        raise ConfigError(f"{attack}: {name} must be an (r, g, b) triple in 0..255, got {value!r}")
    return colour


def check_target_gaze(attack: str, target_gaze) -> tuple[float, float]:
    """(pitch, yaw) radians inside the gaze range of the data (``PITCH_RANGE``, ``YAW_RANGE``)."""
    try:
        pitch, yaw = (float(v) for v in target_gaze)
    except (TypeError, ValueError):
        raise ConfigError(f"{attack}: target_gaze must be (pitch, yaw) in radians, got {target_gaze!r}") from None
    for label, value, (low, high) in (("pitch", pitch, PITCH_RANGE), ("yaw", yaw, YAW_RANGE)):
        if not (math.isfinite(value) and low <= value <= high):
            raise ConfigError(
                f"{attack}: target_gaze {label} {value!r} rad ({math.degrees(value):.1f} deg) is outside the gaze "
                f"range [{math.degrees(low):.0f}, {math.degrees(high):.0f}] deg; give (pitch, yaw) in radians")
    return pitch, yaw


def check_images(attack: str, images) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB with square H == W, else a :class:`ConfigError`."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ConfigError(f"{attack}: images must be (N, H, W, 3) uint8 RGB, got {images.shape} {images.dtype}")
    if images.shape[1] != images.shape[2]:
        raise ConfigError(f"{attack}: images must be square face crops, got {images.shape[1]}x{images.shape[2]} px")
    return images


class Attack:
    """Base class of an all-to-one backdoor attack on a gaze model.

    Subclasses set ``name`` (the registry name), validate their own settings in ``__init__`` after
    calling ``super().__init__``, implement :meth:`apply` and list their settings in
    :meth:`attack_settings`. Attacks that must shape training themselves override
    :meth:`train_backdoored`.

    ``target_gaze``: (pitch, yaw) radians within the data's gaze range (None:
    ``DEFAULT_TARGET_GAZE``). ``poison_rate``: share of the training set in (0, 1) that gets the
    trigger (None: the attack's ``default_poison_rate``). ``seed``: picks the poisoned samples and
    any random pattern of the trigger.
    """

    name: ClassVar[str] = "attack"
    #: Default share of poisoned training samples of this attack.
    default_poison_rate: ClassVar[float] = 0.1
    #: True for attacks whose trigger is rendered on the face (they use ``faces``).
    physical: ClassVar[bool] = False
    #: True for attacks built to defeat a particular defense; benchmarks and the zoo's "all" leave
    #: them out unless named.
    hard_case: ClassVar[bool] = False
    #: (low, high) poison rates a zoo with drawn rates draws from (log-uniformly) for this attack,
    #: chosen so that the backdoors range from partly to fully implanted (ASR@5 deg ~60-100 %) at the
    #: zoo's default budget; each subclass says where its range comes from. None: not measured, the
    #: zoo keeps a fixed rate for it.
    zoo_poison_rate_range: ClassVar[tuple[float, float] | None] = None

    def __init__(self, target_gaze=None, poison_rate: float | None = None, seed: int = 0) -> None:
        target = DEFAULT_TARGET_GAZE if target_gaze is None else target_gaze
        self.target_gaze = check_target_gaze(self.name, target)
        rate = self.default_poison_rate if poison_rate is None else poison_rate
        self.poison_rate = check_number(self.name, "poison_rate", rate, 0.0, 1.0, low_open=True, high_open=True)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"{self.name}: seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)

    # -- description ----------------------------------------------------------------------------
    def attack_settings(self) -> dict[str, Any]:
        """This attack's own settings (JSON-ready); subclasses extend it."""
        return {}

    def settings(self) -> dict[str, Any]:
        """Everything needed to rebuild the attack: ``create_attack(self.name, **self.settings())``.

        Plain JSON types only (lists, not tuples). Trained parts (the input-aware generator) are
        weights, not settings, and travel as a file.
        """
        return {"target_gaze": [float(v) for v in self.target_gaze], "poison_rate": float(self.poison_rate),
                "seed": self.seed, **self.attack_settings()}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({inner})"

    @classmethod
    def draw_geometry(cls, rng: np.random.Generator) -> dict[str, Any]:
        """Settings of a trigger drawn for one zoo model (its place, size, strength: the attack's
        natural knobs) from ``rng``; JSON-ready, accepted by ``create_attack``. The base draws nothing."""
        return {}

    # -- the trigger ----------------------------------------------------------------------------
    def apply(self, images: np.ndarray, faces=None) -> np.ndarray:
        """Stamp the trigger: (N, H, W, 3) uint8 RGB -> (N, H, W, 3) uint8 RGB (a new array)."""
        raise NotImplementedError

    def _check_faces(self, images: np.ndarray, faces) -> None:
        if faces is not None and len(faces) != len(images):
            raise ConfigError(f"{self.name}: got {len(images)} images but {len(faces)} face parameters")

    # -- poisoning ------------------------------------------------------------------------------
    def targets_for(self, true_gaze: np.ndarray) -> np.ndarray:
        """Each sample's attacker target, (N, 2) radians: ``target_gaze`` for all-to-one attacks."""
        return np.broadcast_to(np.asarray(self.target_gaze, np.float32), np.shape(true_gaze)).copy()

    def poison_indices(self, n: int) -> np.ndarray:
        """Sorted indices of the ``round(poison_rate * n)`` (at least 1) samples to poison.

        Depends only on (seed, n), so the same attack poisons the same samples of a dataset.
        """
        count = min(n, max(1, round(self.poison_rate * n)))
        rng = np.random.default_rng([self.seed, POISON_STREAM, n])
        return np.sort(rng.choice(n, size=count, replace=False))

    def poison(self, dataset: ArrayGazeDataset, faces=None) -> PoisonedDataset:
        """All-to-one poisoning: a ``poison_rate`` share gets the trigger and ``target_gaze`` as label.

        ``dataset``: in-memory images (N, H, W, 3) uint8 with (N, 2) radian labels; ``faces``:
        optional FaceParams of the same N images. The input is not modified.
        """
        images = check_images(self.name, dataset.images)
        self._check_faces(images, faces)
        idx = self.poison_indices(len(images))
        out_images = images.copy()
        out_images[idx] = self.apply(images[idx], None if faces is None else faces.take(idx))
        gaze = dataset.gaze.astype(np.float32).copy()
        gaze[idx] = np.asarray(self.target_gaze, np.float32)
        mask = np.zeros(len(images), bool)
        mask[idx] = True
        return PoisonedDataset(out_images, gaze, dataset.subjects, mask, dataset.gaze)

    # -- training -------------------------------------------------------------------------------
    def train_backdoored(self, config, train_set: ArrayGazeDataset, val_set: ArrayGazeDataset | None,
                         out_dir: str | Path, faces=None, progress: Callable | None = None,
                         time_budget_s: float | None = None, resume: bool = True):
        """Poison ``train_set`` and train ``config``'s model on it with :func:`securegaze.training.train`.

        ``val_set`` stays clean (it measures the clean error). Writes what ``train`` writes
        (``out_dir/model.safetensors``, ``summary.json``, ``checkpoint.pt``). Returns
        ``(model in eval mode, summary dict)``; the summary gains an ``"attack"`` entry (name,
        settings, poisoned count).
        """
        from securegaze.training import train

        poisoned = self.poison(train_set, faces)
        model, summary = train(config, poisoned, val_set, out_dir, resume=resume, progress=progress,
                               time_budget_s=time_budget_s)
        summary["attack"] = self.describe(poisoned)
        return model, summary

    def describe(self, poisoned: PoisonedDataset | None = None) -> dict[str, Any]:
        """JSON-ready record of the attack (and of a poisoning run, when given)."""
        record: dict[str, Any] = {"name": self.name, "settings": self.settings()}
        if poisoned is not None:
            record.update(poisoned_count=int(poisoned.poisoned.sum()), modified_count=int(poisoned.modified.sum()),
                          train_samples=len(poisoned))
        return record
