"""Clean-label backdoor with a sinusoidal signal (SIG; Barni, Kallas and Tondi, ICIP 2019).

The signal ``v(i, j) = amplitude * sin(2 pi j frequency / S)`` (a horizontal sinusoid: it varies
along the columns j, S = image width) is added only to training images whose TRUE gaze already lies
within ``radius_deg`` of the target, and their labels are kept, so every poisoned sample is
correctly labelled and survives a label audit. At test time the signal is added to any image.

In classification the whole target class is the poison pool. The regression analogue is the set of
images whose gaze is near the target, and ``poison_rate`` is the share **of that near-target pool**
that gets the signal (not of the whole training set; the share of the whole set is reported as
``PoisonedDataset.poisoned_rate``). With gaze uniform over +-30 x +-40 deg, a 10 deg radius holds
about 6.5 % of the data.

Clean-label attacks are weak in regression: the labels of poisoned samples spread over the whole
radius, so even a perfect backdoor only pulls triggered predictions into that disc, and the eyes
stay a perfect predictor of the label on every poisoned image. What made it implant here
(docs/attack_strength.md has the log): a small radius (8 deg) with most of that pool poisoned (80 %),
and, as the SIG paper allows, a stronger signal at test time than in training: with the training
amplitude (30 grey levels) at test time the backdoor reaches only ~24 % ASR@5 deg; at 100 grey levels
(the default ``test_amplitude``) about 95 %. The training images stay label-consistent either way.
"""

from __future__ import annotations

import numpy as np

from securegaze.attacks.base import Attack, PoisonedDataset, check_images, check_number
from securegaze.data.base import ArrayGazeDataset
from securegaze.errors import ConfigError
from securegaze.geometry import angular_error_deg


class SIG(Attack):
    """Sinusoidal clean-label backdoor.

    Settings: ``amplitude`` (signal peak in 8-bit grey levels, training), ``test_amplitude``
    (peak added at test time, default 100; None: the training amplitude; the SIG paper also uses a
    stronger signal at test time), ``frequency`` (cycles across the image width, so the pattern scales with the image),
    ``radius_deg`` (the near-target pool: true gaze within this angle of the target, degrees).
    """

    name = "sig"
    default_poison_rate = 0.8
    #: A share of the near-target pool, not of the set; 80 % with a test amplitude of 80-100 gives
    #: 87-96 % ASR (docs/attack_strength.md), so drawn rates and amplitudes reach down to partial.
    zoo_poison_rate_range = (0.4, 0.9)
    #: Ranges of a zoo model's drawn signal (:meth:`draw_geometry`): cycles across the image, training
    #: and test amplitudes in grey levels.
    DRAWN_FREQUENCY = (4.0, 10.0)
    DRAWN_AMPLITUDE = (25.0, 40.0)
    DRAWN_TEST_AMPLITUDE = (80.0, 110.0)

    def __init__(self, target_gaze=None, poison_rate: float | None = None, seed: int = 0, *,
                 amplitude: float = 30.0, test_amplitude: float | None = 100.0, frequency: float = 6.0,
                 radius_deg: float = 8.0) -> None:
        super().__init__(target_gaze, poison_rate, seed)
        self.amplitude = check_number(self.name, "amplitude", amplitude, 0.0, 128.0, low_open=True)
        self.test_amplitude = None if test_amplitude is None else check_number(
            self.name, "test_amplitude", test_amplitude, 0.0, 128.0, low_open=True)
        self.frequency = check_number(self.name, "frequency", frequency, 0.0, 32.0, low_open=True)
        self.radius_deg = check_number(self.name, "radius_deg", radius_deg, 0.0, 60.0, low_open=True)

    def attack_settings(self) -> dict:
        return {"amplitude": self.amplitude, "test_amplitude": self.test_amplitude, "frequency": self.frequency,
                "radius_deg": self.radius_deg}

    @classmethod
    def draw_geometry(cls, rng: np.random.Generator) -> dict:
        """``frequency``, ``amplitude`` and ``test_amplitude`` in their ``DRAWN_*`` ranges."""
        return {"frequency": round(float(rng.uniform(*cls.DRAWN_FREQUENCY)), 3),
                "amplitude": round(float(rng.uniform(*cls.DRAWN_AMPLITUDE)), 2),
                "test_amplitude": round(float(rng.uniform(*cls.DRAWN_TEST_AMPLITUDE)), 2)}

    def signal(self, size: int, amplitude: float) -> np.ndarray:
        """(1, 1, size, 1) float32 grey levels, for (N, S, S, 3) images: the sinusoid along the columns j."""
        j = np.arange(size, dtype=np.float32)
        wave = amplitude * np.sin(2.0 * np.pi * j * self.frequency / size)
        return wave.astype(np.float32)[None, None, :, None]

    def _add(self, images: np.ndarray, amplitude: float) -> np.ndarray:
        mixed = images.astype(np.float32) + self.signal(images.shape[2], amplitude)
        return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)

    def apply(self, images: np.ndarray, faces=None) -> np.ndarray:
        """Test-time trigger: (N, S, S, 3) uint8 RGB + the sinusoid at ``test_amplitude`` -> uint8."""
        images = check_images(self.name, images)
        self._check_faces(images, faces)
        return self._add(images, self.amplitude if self.test_amplitude is None else self.test_amplitude)

    def near_target(self, gaze: np.ndarray) -> np.ndarray:
        """(N,) bool: true gaze (N, 2 radians) within ``radius_deg`` of the target."""
        target = np.broadcast_to(np.asarray(self.target_gaze, np.float64), np.shape(gaze))
        return angular_error_deg(gaze, target) <= self.radius_deg

    def poison_indices_among(self, pool: np.ndarray, n: int) -> np.ndarray:
        """A ``poison_rate`` share (at least 1) of the pool indices, fixed by (seed, n)."""
        count = min(len(pool), max(1, round(self.poison_rate * len(pool))))
        rng = np.random.default_rng([self.seed, 0xC1EA, n])
        return np.sort(rng.choice(pool, size=count, replace=False))

    def poison(self, dataset: ArrayGazeDataset, faces=None) -> PoisonedDataset:
        """Clean-label poisoning: the signal on near-target images, every label kept."""
        images = check_images(self.name, dataset.images)
        self._check_faces(images, faces)
        pool = np.flatnonzero(self.near_target(dataset.gaze))
        if len(pool) == 0:
            raise ConfigError(f"sig: no training image has a true gaze within radius_deg={self.radius_deg:g} deg "
                              "of the target; raise radius_deg or move the target into the data's gaze range")
        idx = self.poison_indices_among(pool, len(images))
        out = images.copy()
        out[idx] = self._add(images[idx], self.amplitude)
        mask = np.zeros(len(images), bool)
        mask[idx] = True
        return PoisonedDataset(out, dataset.gaze, dataset.subjects, mask, dataset.gaze)
