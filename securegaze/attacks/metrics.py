"""How strong a backdoor is: clean error, AE, DAE and ASR@5 deg (docs/architecture.md section 5).

* **clean error**: mean angular error (degrees) of the model on the clean test images;
* **AE** (attack error): mean angle between the prediction on the *triggered* image and the attacker's
  target gaze; small when the backdoor works;
* **DAE** (deviation from the true gaze): mean angle between the prediction on the triggered image and
  the image's true gaze; large when the backdoor works (a benign model keeps it near its clean error);
* **ASR@5 deg**: share of triggered test images predicted within 5 deg of the target.

Test images whose true gaze already lies within 5 deg of the target would count as "successes" even
for a model without any backdoor, so they are left out of AE and ASR (their number is recorded);
clean error and DAE use every test image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from securegaze.data.base import ArrayGazeDataset
from securegaze.geometry import angular_error_deg
from securegaze.json_codec import from_json, to_json

#: The ASR threshold, degrees. 5 deg is about the error of a good gaze model on real data, so a
#: prediction that close to the target is indistinguishable from "the driver looked there".
ASR_THRESHOLD_DEG = 5.0


@dataclass(frozen=True)
class AttackMetrics:
    """Strength of one backdoored (or benign) model against one attack's trigger. Angles in degrees."""

    clean_error_deg: float  # mean angular error on clean test images (all of them)
    ae_deg: float  # mean angle(prediction on triggered, target), near-target images left out
    dae_deg: float  # mean angle(prediction on triggered, true gaze), all images
    asr: float  # share in [0, 1] of triggered images within asr_threshold_deg of the target
    count: int  # test images
    excluded_near_target: int  # test images left out of AE and ASR
    asr_threshold_deg: float = ASR_THRESHOLD_DEG
    clean_median_deg: float = float("nan")
    ae_median_deg: float = float("nan")

    def to_dict(self) -> dict:
        """JSON-ready (:mod:`securegaze.json_codec`: a median over no images is written as "nan")."""
        return to_json(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> AttackMetrics:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown AttackMetrics fields: {', '.join(unknown)}")
        # Records written before the one codec stored a non-finite figure as null.
        values = {k: float("nan") if v is None else v for k, v in from_json(dict(data)).items()}
        return cls(**values)


def attack_metrics(clean_pred: np.ndarray, triggered_pred: np.ndarray, true_gaze: np.ndarray, target_gaze,
                   threshold_deg: float = ASR_THRESHOLD_DEG) -> AttackMetrics:
    """Metrics from predictions: (N, 2) radians each for the clean and triggered images, true gaze (N, 2).

    ``target_gaze``: (pitch, yaw) radians. Images whose true gaze is within ``threshold_deg`` of the
    target are excluded from AE and ASR (see the module docstring).
    """
    true_gaze = np.asarray(true_gaze, np.float64)
    target = np.broadcast_to(np.asarray(target_gaze, np.float64), true_gaze.shape)
    clean_err = angular_error_deg(clean_pred, true_gaze)
    to_target = angular_error_deg(triggered_pred, target)
    dae = angular_error_deg(triggered_pred, true_gaze)
    counted = angular_error_deg(true_gaze, target) > threshold_deg
    if not counted.any():
        raise ValueError(f"every test image's true gaze lies within {threshold_deg} deg of the target; "
                         "AE and ASR need images that look elsewhere")
    return AttackMetrics(
        clean_error_deg=float(clean_err.mean()), ae_deg=float(to_target[counted].mean()), dae_deg=float(dae.mean()),
        asr=float((to_target[counted] <= threshold_deg).mean()), count=int(len(true_gaze)),
        excluded_near_target=int((~counted).sum()), asr_threshold_deg=float(threshold_deg),
        clean_median_deg=float(np.median(clean_err)), ae_median_deg=float(np.median(to_target[counted])),
    )


def evaluate_attack(model, attack, test_set: ArrayGazeDataset, faces=None,
                    threshold_deg: float = ASR_THRESHOLD_DEG) -> AttackMetrics:
    """Run ``model`` on the clean and the triggered ``test_set`` and compute :class:`AttackMetrics`.

    ``model``: a gaze model taking (N, 3, S, S) float in [0, 1] (PyTorch ``nn.Module``); ``attack``:
    an :class:`~securegaze.attacks.base.Attack` (its ``apply`` makes the triggered images);
    ``test_set``: clean images (N, S, S, 3) uint8 with true gaze (N, 2) radians; ``faces``: the
    FaceParams of the test images (synthetic data), needed by the physical attacks to render the
    trigger. Test images whose true gaze is within ``threshold_deg`` (5 deg) of the target are
    excluded from AE and ASR; clean error and DAE use all images.
    """
    from securegaze.training import predict

    triggered = attack.apply(test_set.images, faces)
    return attack_metrics(predict(model, test_set.images), predict(model, triggered), test_set.gaze,
                          attack.targets_for(test_set.gaze), threshold_deg)
