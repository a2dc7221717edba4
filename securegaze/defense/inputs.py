"""Input checks every detector shares: the model's F/H interface, the clean images, a setting's value.

Each failure is one line naming the detector and what was expected (:mod:`securegaze.errors`).
"""

from __future__ import annotations

import numpy as np
import torch

from securegaze.errors import DatasetError, ModelFormatError
from securegaze.validation import check_setting

__all__ = ["MIN_CLEAN_IMAGES", "add_input_check", "check_gaze_model", "check_gaze_plausible", "check_setting",
           "clean_tensor", "input_convention_check"]

#: Fewest clean images a scan accepts: dispersion and variance statistics over fewer are noise.
#: docs/architecture.md section 6 assumes "hundreds"; 8 only keeps tests and smoke runs possible.
MIN_CLEAN_IMAGES = 8


def check_gaze_model(model, detector: str) -> None:
    """``model`` must expose the G = H o F interface (docs/architecture.md section 3), else a ModelFormatError."""
    missing = [name for name in ("features", "head", "head_weight", "input_size") if not hasattr(model, name)]
    if missing or not isinstance(model, torch.nn.Module):
        what = type(model).__name__
        raise ModelFormatError(
            f"{detector}: {what} is not a gaze model split into F and H (missing {', '.join(missing) or 'nn.Module'}); "
            "load it with securegaze.defense.load_model_any, and for a third-party ONNX declare "
            '"feature_split": {"feature_tensor": "<name>"} in its manifest'
        )


def clean_tensor(clean_images, input_size: int, detector: str) -> torch.Tensor:
    """Clean images as (N, 3, S, S) float32 in [0, 1], checked against the model's ``input_size``.

    Accepts an in-memory dataset (its ``images``), (N, S, S, 3) uint8 RGB, or an (N, 3, S, S) float
    tensor / array in [0, 1]. Raises :class:`DatasetError` for an empty or too small set, wrong
    layout or size, and values outside [0, 1].
    """
    images = getattr(clean_images, "images", clean_images)
    if isinstance(images, torch.Tensor):
        x = images.detach().to(torch.float32).cpu()
        layout = "tensor"
    else:
        try:
            array = np.asarray(images)
        except Exception as exc:  # ragged lists and the like
            raise DatasetError(f"{detector}: clean images cannot be read as an array ({exc})") from None
        if array.dtype == np.uint8:
            if array.ndim != 4 or array.shape[-1] != 3:
                raise DatasetError(f"{detector}: clean images must be (N, S, S, 3) uint8 RGB, got shape {array.shape}")
            x = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div_(255.0)
        elif np.issubdtype(array.dtype, np.floating):
            x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        else:
            raise DatasetError(
                f"{detector}: clean images have dtype {array.dtype}; expected uint8 (N, S, S, 3) RGB "
                "or float (N, 3, S, S) in [0, 1]"
            )
        layout = "array"
    if x.ndim != 4 or x.shape[1] != 3:
        raise DatasetError(f"{detector}: clean images must be (N, 3, S, S) floats in [0, 1], got {layout} of shape "
                           f"{tuple(x.shape)}")
    if len(x) == 0:
        raise DatasetError(f"{detector}: the clean image set is empty; give at least {MIN_CLEAN_IMAGES} "
                           "(hundreds recommended) clean face crops")
    if len(x) < MIN_CLEAN_IMAGES:
        raise DatasetError(f"{detector}: got {len(x)} clean images; need at least {MIN_CLEAN_IMAGES} "
                           "(hundreds recommended)")
    size = int(input_size)
    if x.shape[2] != size or x.shape[3] != size:
        raise DatasetError(
            f"{detector}: clean images are {x.shape[2]}x{x.shape[3]} px but the model expects {size}x{size} "
            "(its input_size); resize them first (securegaze.data.base.resize_images)"
        )
    if not torch.isfinite(x).all():
        raise DatasetError(f"{detector}: clean images contain NaN or inf values")
    if x.min() < 0.0 or x.max() > 1.0:
        raise DatasetError(
            f"{detector}: clean image values span [{x.min().item():.3g}, {x.max().item():.3g}]; expected [0, 1] "
            "(or uint8 0..255)"
        )
    return x.contiguous()


#: Input conventions a third-party graph may expect instead of RGB in [0, 1], as a transform of it.
OTHER_CONVENTIONS = {
    "values in [0, 255]": lambda x: x * 255.0,
    "values in [-1, 1]": lambda x: x * 2.0 - 1.0,
    "ImageNet mean / std standardisation": lambda x: (x - x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
    / x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    "BGR channel order": lambda x: x.flip(1),
}
#: How ``securegaze describe`` declares each of them in a manifest beside the file.
DESCRIBE_OPTIONS = {
    "values in [0, 255]": "--value-range 0,255",
    "values in [-1, 1]": "--value-range -1,1",
    "ImageNet mean / std standardisation": "--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225",
    "BGR channel order": "--channel-order BGR",
}
#: The clean gaze spread (deg) under which other conventions are tried, how many times wider one must
#: spread the gaze to be named, and the largest angle (deg) a plausible gaze reaches (95th percentile).
SPREAD_SUSPECT_DEG = 10.0
#: The clean gaze spread (deg) under which the warning says the verdict means nothing (one face, or
#: faces that all look one way: a collapse is then nothing to find). Not refused: a model that does not
#: follow faces (untrained, or fed another pixel range) spreads as little, and its scan still reports.
MIN_SPREAD_DEG = SPREAD_SUSPECT_DEG / 5
SPREAD_FACTOR = 3.0
PLAUSIBLE_DEG = 90.0


def gaze_spread_deg(model, x: torch.Tensor, batch_size: int = 64) -> tuple[float, bool]:
    """(sqrt(var pitch + var yaw) of ``model``'s gaze over ``x`` in degrees, whether the gaze is plausible:
    finite, and 95 % of the angles within :data:`PLAUSIBLE_DEG`)."""
    with torch.no_grad():
        gaze = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).double()
    if not torch.isfinite(gaze).all():
        return float("inf"), False
    degrees = torch.rad2deg(gaze)
    plausible = float(torch.quantile(degrees.abs().flatten(), 0.95)) <= PLAUSIBLE_DEG
    return float(degrees.var(0, unbiased=False).sum().sqrt()), plausible


def input_convention_check(model, clean_images, limit: int = 128) -> dict | None:
    """Does the model seem to take its input another way than RGB in [0, 1] (a third-party graph with no
    manifest that says so)? Over the clean faces a gaze model's answers spread as their gazes do; fed
    the wrong range they crowd together (a model that wants [0, 255] sees black faces) or leave the
    range of gazes. Returns None when the spread as given is :data:`SPREAD_SUSPECT_DEG` or more, else a
    record with the spread as given and each other convention's, and a ``warning`` line that names the
    plausible one spreading the gaze :data:`SPREAD_FACTOR` times more, and by at least
    :data:`SPREAD_SUSPECT_DEG` (as a working gaze model's answers spread), if any (an untrained or dead
    model spreads little under every convention: none is named). Only a warning: a folder
    of faces that all look one way spreads little too, and the scan's figures are then weak anyway. A
    gaze past any plausible angle as given (a graph that answers in degrees) gets its own warning."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = clean_tensor(clean_images, int(model.input_size), "input check")[:limit].to(device)
    given, plausible_given = gaze_spread_deg(model, x)
    if not plausible_given:  # answers beyond any gaze: another unit (degrees?) than the radians read here
        return {"spread_deg": round(given, 3), "plausible": False, "warning": _implausible_line(len(x))}
    if given >= SPREAD_SUSPECT_DEG:
        return None
    others = {name: gaze_spread_deg(model, convert(x)) for name, convert in OTHER_CONVENTIONS.items()}
    plausible = {name: spread for name, (spread, ok) in others.items() if ok}
    record = {"spread_deg": round(given, 3),
              "others_deg": {k: (round(v, 3) if ok else None) for k, (v, ok) in others.items()}}
    if any(not ok for _, ok in others.values()):
        record["others_note"] = "None: read that way, the gaze goes past any plausible angle (or is not finite)"
    line = f"the model's gaze spreads only {given:.2f} deg over {len(x)} clean faces"
    best = max(plausible, key=plausible.get) if plausible else None
    if best is not None and plausible[best] >= max(SPREAD_FACTOR * given, SPREAD_SUSPECT_DEG):
        record["likely"] = best
        line += (f", and {plausible[best]:.1f} deg with {best}: if the model expects that, declare it in a "
                 f"manifest.json beside the .onnx (securegaze describe MODEL.onnx {DESCRIBE_OPTIONS[best]}, with --force "
                 "to replace a manifest already there), or this verdict means nothing")
    elif given < MIN_SPREAD_DEG:
        line += (" (one face, or faces that all look one way: a collapse cannot be told from these, and this "
                 "verdict means nothing; bring faces that look in varied directions)")
    else:
        line += " (a scan needs faces that look in varied directions: its figures are weak on these)"
    record["warning"] = line
    return record


def _implausible_line(count: int) -> str:
    return (f"the model's gaze reaches past {PLAUSIBLE_DEG:g} deg on 5 % or more of {count} clean faces, read as "
            "(pitch, yaw) radians: if it answers in another unit, declare it in a manifest.json beside the .onnx "
            "(for degrees: securegaze describe MODEL.onnx --units degrees, with --force to replace a manifest "
            "already there)")


def check_gaze_plausible(model, clean_images, who: str, limit: int = 128) -> None:
    """Refuse, before a scan, a model whose gaze over the clean faces is no gaze at all read as (pitch,
    yaw) radians (non-finite, or 5 % of the angles past :data:`PLAUSIBLE_DEG`: a graph answering in
    degrees under a manifest that says radians): every figure of a scan of it would mean nothing, so
    one :class:`ModelFormatError` line naming ``who`` (the model file) and the remedy."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = clean_tensor(clean_images, int(model.input_size), "input check")[:limit].to(device)
    spread, plausible = gaze_spread_deg(model, x)
    if spread == float("inf"):
        raise ModelFormatError(f"{who}: its gaze is not a finite number (NaN or infinite) on some of {len(x)} clean "
                               "faces; a scan of it would mean nothing")
    if not plausible:
        raise ModelFormatError(f"{who}: {_implausible_line(len(x))}; a scan of it would mean nothing")


def add_input_check(report, model, clean_images) -> None:
    """Run :func:`input_convention_check` and, when it has something to say, keep its record in the
    report's details (``input_check``) and its line among the report's ``warnings``; keep how a
    third-party graph's form was adapted on reading (``model.adaptations``, see
    :mod:`securegaze.bundle.adapt`) as ``model_adaptations``."""
    if getattr(model, "adaptations", ()):
        report.details["model_adaptations"] = list(model.adaptations)
    check = input_convention_check(model, clean_images)
    if check is not None:
        report.details["input_check"] = check
        report.details["warnings"] = [*report.details.get("warnings", []), check["warning"]]
