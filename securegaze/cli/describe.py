"""``securegaze describe``: write the manifest that tells how a third-party ONNX file is read."""

from __future__ import annotations

from pathlib import Path

import typer

from securegaze.cli.support import console


def _numbers(text: str | None, count: int, option: str, kind=float) -> tuple | None:
    """``"0,255"`` -> ``(0.0, 255.0)``; a usage error naming ``option`` unless exactly ``count`` numbers."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(kind(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count:
        what = "integer" if kind is int else "number"
        raise typer.BadParameter(f"{text!r} is not {count} comma-separated {what}s", param_hint=option)
    return values


def _names(text: str | None, count: int, option: str, allowed: tuple[str, ...] | None = None) -> tuple | None:
    if text is None:
        return None
    parts = tuple(p.strip() for p in text.split(","))
    if len(parts) != count or not all(parts) or (allowed is not None and set(parts) != set(allowed)):
        expected = f"{'/'.join(allowed)} in some order" if allowed else f"{count} comma-separated names"
        raise typer.BadParameter(f"{text!r} is not {expected}", param_hint=option)
    return parts


#: The input conventions tried when the gaze hardly moves and none was declared: the options that
#: declare each (as the scan's input warning words them) and the fields they set.
ALTERNATIVES = {
    "--value-range 0,255": {"value_range": (0.0, 255.0)},
    "--value-range -1,1": {"value_range": (-1.0, 1.0)},
    "--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225": {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    "--channel-order BGR": {"channel_order": "BGR"},
}


def _likely_input(model: Path, declared: dict, spread: float) -> tuple[str, float] | None:
    """(options, spread) of the input convention under which the probe's faces spread the gaze as a
    working model's answers do (the scan's rule: 3x the spread as declared and 10 deg or more, angles
    plausible), or None."""
    from securegaze.bundle.describe import describe_onnx
    from securegaze.defense.inputs import PLAUSIBLE_DEG, SPREAD_FACTOR, SPREAD_SUSPECT_DEG
    from securegaze.errors import SecureGazeError

    spreads = {}
    for options, fields in ALTERNATIVES.items():
        try:
            tried = describe_onnx(model, **{**declared, **fields})
        except SecureGazeError:
            continue
        if tried.reach_deg <= PLAUSIBLE_DEG:
            spreads[options] = tried.spread_deg
    best = max(spreads, key=spreads.get, default=None)
    if best is None or spreads[best] < max(SPREAD_FACTOR * spread, SPREAD_SUSPECT_DEG):
        return None
    return best, spreads[best]


def describe(
    model: Path = typer.Argument(..., help="The .onnx file to describe; manifest.json is written beside it."),
    input_size: int | None = typer.Option(None, "--input-size", min=1, help="Face crop size (px) the model reads: "
                                          "needed when the graph's height and width are dynamic."),
    value_range: str | None = typer.Option(None, "--value-range", help="Pixel range the graph wants, e.g. 0,255 or "
                                           "-1,1 (default 0,1)."),
    mean: str | None = typer.Option(None, "--mean", help="Per-channel mean subtracted, in the graph's channel order "
                                    "and value range, e.g. 0.485,0.456,0.406 (ImageNet for 0..1 RGB)."),
    std: str | None = typer.Option(None, "--std", help="Per-channel std divided by, e.g. 0.229,0.224,0.225."),
    channel_order: str | None = typer.Option(None, "--channel-order", help="RGB (default) or BGR."),
    units: str | None = typer.Option(None, "--units", help="Units of the gaze output: radians (default) or degrees."),
    order: str | None = typer.Option(None, "--order", help="Order of the gaze output: pitch,yaw (default) or "
                                     "yaw,pitch."),
    output: str | None = typer.Option(None, "--output", help="The (N, 2) gaze output (or (N, 3) unit gaze vector), "
                                      "when the graph has several."),
    bins: str | None = typer.Option(None, "--bins", help="Binned logits: COUNT,START_DEG,WIDTH_DEG (e.g. 90,-180,4), "
                                    "with --outputs."),
    outputs: str | None = typer.Option(None, "--outputs", help="With --bins: the pitch and yaw logit outputs, "
                                       "PITCH,YAW."),
    feature_tensor: str | None = typer.Option(None, "--feature-tensor", help="The (N, D) penultimate features, when "
                                              "the scan cannot find them (no Gemm/MatMul right before the output)."),
    force: bool = typer.Option(False, "--force", help="Replace a manifest.json that already describes this file."),
) -> None:
    """Describe a third-party ONNX gaze model in a manifest.json beside it: how it wants its pixels and how
    its gaze is read. Every command then reads the file that way (securegaze scan / evaluate / mitigate,
    edge-app run --model). The manifest is checked as loading checks it and tried on 32 synthetic faces
    before it is written."""
    from securegaze.bundle.describe import describe_onnx
    from securegaze.bundle.manifest import MANIFEST_NAME
    from securegaze.defense.inputs import SPREAD_SUSPECT_DEG
    from securegaze.errors import InputFileError
    from securegaze.io import atomic_write_bytes, read_json

    if model.suffix.lower() != ".onnx" or not model.is_file():
        raise InputFileError(f"{model}: {'not an .onnx file' if model.is_file() else 'no such file'}; "
                             "securegaze describe writes the manifest of one .onnx file")
    target = model.parent / MANIFEST_NAME
    if target.exists():
        existing = read_json(target, "bundle manifest")
        names = existing.get("onnx_file") if isinstance(existing, dict) else None
        if names != model.name:
            raise InputFileError(f"{target} already describes {names!r}, not {model.name}: put {model.name} in a folder "
                                 "of its own")
        if not force:
            raise InputFileError(f"{target} already describes {model.name}; pass --force to replace it")
    if channel_order is not None and channel_order not in ("RGB", "BGR"):
        raise typer.BadParameter(f"{channel_order!r} is not RGB or BGR", param_hint="--channel-order")
    if units is not None and units not in ("radians", "degrees"):
        raise typer.BadParameter(f"{units!r} is not radians or degrees", param_hint="--units")
    if (bins is None) != (outputs is None):
        raise typer.BadParameter("--bins and --outputs go together", param_hint="--bins")
    counted = _numbers(bins, 3, "--bins")
    if counted is not None and (counted[0] != int(counted[0]) or counted[0] < 2):
        raise typer.BadParameter(f"{bins!r}: COUNT must be an integer of at least 2", param_hint="--bins")
    declared = {"input_size": input_size, "units": units, "order": _names(order, 2, "--order", ("pitch", "yaw")),
                "output": output, "bins": None if counted is None else (int(counted[0]), counted[1], counted[2]),
                "binned_outputs": _names(outputs, 2, "--outputs"), "feature_tensor": feature_tensor}
    pixels = {"value_range": _numbers(value_range, 2, "--value-range"), "mean": _numbers(mean, 3, "--mean"),
              "std": _numbers(std, 3, "--std"), "channel_order": channel_order}
    described = describe_onnx(model, **declared, **pixels)
    manifest = described.manifest
    atomic_write_bytes(target, manifest.to_json().encode("utf-8"))
    for note in described.adaptations:
        console.print(f"note: {note}")
    spec = manifest.input
    console.print(f"manifest written: {target} (onnx sha256 {manifest.onnx_sha256[:16]}...)")
    console.print(f"input {spec.name!r}: (N, 3, {spec.size}, {spec.size}) {spec.channel_order}, values in "
                  f"[{spec.value_range[0]:g}, {spec.value_range[1]:g}], mean {list(spec.mean)}, std {list(spec.std)}")
    out = manifest.output
    console.print(f"output {', '.join(repr(n) for n in out.names)}: {out.decoding}, read as (pitch, yaw) radians")
    console.print(f"on 32 synthetic faces looking around the gaze spreads {described.spread_deg:.1f} deg and reaches "
                  f"{described.reach_deg:.1f} deg (95th percentile of the larger angle)")
    if described.spread_deg < SPREAD_SUSPECT_DEG:
        likely = None if any(v is not None for v in pixels.values()) else _likely_input(model, declared,
                                                                                        described.spread_deg)
        if likely is not None:
            console.print(f"warning: the gaze hardly moves over faces that look around, and spreads {likely[1]:.1f} "
                          f"deg with {likely[0]}: if the model expects that, describe it so: securegaze describe "
                          f"{model} {likely[0]} --force")
        else:
            console.print("warning: the gaze hardly moves over faces that look around: the model probably wants its "
                          "pixels another way (--value-range, --mean / --std, --channel-order), or does not read "
                          "faces like these")
    elif described.reach_deg > 90:
        console.print("warning: the gaze reaches past 90 deg read as radians: its unit is probably not the declared one "
                      "(--units)")
