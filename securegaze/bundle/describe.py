"""A manifest for a third-party ONNX file, from what its user declares (``securegaze describe``).

A graph cannot say which pixel range or channel order it wants, whether it answers in degrees or in
(yaw, pitch) order, how its bins are laid out, or (with a dynamic height and width) what size it reads.
The user declares those; :func:`describe_onnx` fills in the rest from the graph (input name, size,
the gaze output, the sha256), checks the result exactly as loading will (the graph against the
manifest, an ONNX Runtime session, a forward on the probe's synthetic faces) and returns it with what
the faces gave, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from securegaze.bundle.adapt import adapt_graph, angles_from_vector, probe_faces, reads_as_degrees
from securegaze.bundle.manifest import BundleManifest, validation_line
from securegaze.bundle.manifest_checks import check_against_manifest, input_as_given, outputs_advice
from securegaze.bundle.onnx_graph import (
    load_onnx,
    onnx_sha256,
    real_inputs,
    shape_text,
    value_dims,
    with_inferred_shapes,
)
from securegaze.bundle.runtime import Bundle
from securegaze.errors import ModelFormatError

__all__ = ["Described", "describe_onnx"]


@dataclass(frozen=True)
class Described:
    """A checked manifest for a file, the notes of its graph's adaptations, and its gaze on the probe's
    faces: ``spread_deg`` (sqrt of the summed variances of pitch and yaw) and ``reach_deg`` (95th
    percentile of the larger angle)."""

    manifest: BundleManifest
    adaptations: tuple[str, ...]
    spread_deg: float
    reach_deg: float


def describe_onnx(path: Path, *, input_size: int | None = None, value_range: tuple[float, float] | None = None,
                  mean: tuple[float, float, float] | None = None, std: tuple[float, float, float] | None = None,
                  channel_order: str | None = None, units: str | None = None, order: tuple[str, str] | None = None,
                  output: str | None = None, bins: tuple[int, float, float] | None = None,
                  binned_outputs: tuple[str, str] | None = None, feature_tensor: str | None = None) -> Described:
    """The manifest of the ONNX file at ``path`` with the declared fields (None: the project's default,
    or what the graph says), checked; one :class:`ModelFormatError` line when the graph and the
    declarations do not fit. ``bins``: (count, start_deg, width_deg) with ``binned_outputs`` (pitch,
    yaw logits); otherwise ``output`` names the (N, 2) gaze (default: the graph's one (N, 2) output)."""
    proto = load_onnx(path)
    # The input as it will be read (channels first, three channels) and the gaze output as it is found.
    shaped, _ = adapt_graph(path, proto, probe=False)
    graph = with_inferred_shapes(shaped).graph
    inputs = real_inputs(graph)
    if len(inputs) != 1:
        raise ModelFormatError(f"{path} has {len(inputs)} inputs ({', '.join(v.name for v in inputs) or 'none'}); "
                               "only models with one image input are read")
    dims = value_dims(inputs[0]) or []
    size = _size(path, inputs[0].name, dims, input_size, input_as_given(proto) or dims)
    if bins is not None:
        if binned_outputs is None:
            raise ModelFormatError(f"{path}: binned decoding needs --outputs PITCH_LOGITS,YAW_LOGITS")
        out = {"decoding": "binned", "names": list(binned_outputs),
               "bins": {"count": bins[0], "start_deg": bins[1], "width_deg": bins[2]}}
    else:
        out = {"decoding": "direct", "names": [output or _gaze_output(path, shaped)]}
    if units is not None:
        out["units"] = units
    if order is not None:
        out["order"] = list(order)
    fields = {"input": {"name": inputs[0].name, "size": size,
                        **{k: v for k, v in (("value_range", value_range), ("mean", mean), ("std", std),
                                             ("channel_order", channel_order)) if v is not None}},
              "output": out}
    if feature_tensor is not None:
        fields["feature_split"] = {"feature_tensor": feature_tensor}
    declared = ", ".join(f"{k} {v}" for k, v in (("input size", input_size), ("value range", value_range),
                                                  ("mean", mean), ("std", std), ("channel order", channel_order),
                                                  ("units", units), ("order", order), ("bins", bins),
                                                  ("feature tensor", feature_tensor)) if v is not None)
    try:
        manifest = BundleManifest(
            name=path.stem, architecture="onnx", config={"architecture": "onnx", "input_size": size,
                                                          "decoding": out["decoding"]},
            onnx_file=path.name, onnx_sha256=onnx_sha256(path), **fields,
            provenance={"created": datetime.now(UTC),
                        "notes": f"written by securegaze describe; declared: {declared or 'nothing'}"})
    except ValidationError as exc:
        raise ModelFormatError(f"{path}: the declared manifest is not valid: {validation_line(exc)}") from None
    # Exactly what loading does with a manifest beside the file.
    adapted_proto, adapted = adapt_graph(path, load_onnx(path), manifest.output, manifest.input)
    fixed_batch = check_against_manifest(path, None, adapted_proto, manifest)
    bundle = Bundle(manifest, path, None, adapted_proto, fixed_batch=fixed_batch, adaptations=adapted)
    gaze = np.rad2deg(np.asarray(bundle.predict(probe_faces(size)), np.float64))
    spread = float(np.sqrt(gaze.var(0).sum()))
    reach = float(np.quantile(np.abs(gaze).max(axis=1), 0.95))
    vector = angles_from_vector(adapted_proto)  # radians by construction
    if units is None and bins is None and not vector and reads_as_degrees(float(np.deg2rad(reach))):
        # Past any gaze read as radians, plausible read as degrees: declared so, as a bare file is read
        # (adapt.degrees_note); --units radians keeps radians.
        found = describe_onnx(path, input_size=input_size, value_range=value_range, mean=mean, std=std,
                              channel_order=channel_order, units="degrees", order=order, output=output,
                              feature_tensor=feature_tensor)
        notes = f"written by securegaze describe; declared: {declared or 'nothing'}; units degrees found from its answers"
        manifest = found.manifest.model_copy(update={"provenance": found.manifest.provenance.model_copy(
            update={"notes": notes})})
        note = (f"{path.name}: its gaze on {len(gaze)} synthetic faces reaches {np.deg2rad(reach):.1f} at the 95th "
                "percentile: past any gaze in radians, plausible in degrees; declared as degrees (--units radians "
                "keeps radians)")
        return Described(manifest, (*found.adaptations, note), found.spread_deg, found.reach_deg)
    return Described(manifest, adapted, spread, reach)


def _size(path: Path, name: str, dims: list, declared: int | None, given: list) -> int:
    """The input size: the graph's (``dims``, channels first) or the declared one; ``given``: the input's
    shape as the file has it, for error lines."""
    graph_size = dims[2] if len(dims) == 4 and isinstance(dims[2], int) and dims[2] == dims[3] else None
    if declared is not None and graph_size is not None and declared != graph_size:
        raise ModelFormatError(f"{path} input {name!r} has shape {shape_text(given)}: it reads {graph_size} px, not "
                               f"the declared --input-size {declared}")
    if declared is None and graph_size is None:
        raise ModelFormatError(f"{path} input {name!r} has shape {shape_text(given)}: its height and width are not "
                               "fixed; declare the face crop size it was trained on with --input-size")
    return int(declared or graph_size)


def _gaze_output(path: Path, proto) -> str:
    """The graph's gaze output when no name is declared: its only output, or its one (N, 2) or
    (N, 3) output among several (``proto`` as a bare file is read: two (N, 1) pitch and yaw outputs
    already one)."""
    outputs = [(o.name, value_dims(o)) for o in with_inferred_shapes(proto).graph.output]
    if len(outputs) == 1:
        return outputs[0][0]
    for width in (2, 3):
        fitting = [n for n, d in outputs if d is not None and len(d) == 2 and d[1] == width]
        if len(fitting) == 1:
            return fitting[0]
    listed = ", ".join(f"{n} {shape_text(d)}" for n, d in outputs)
    raise ModelFormatError(f"{path} has outputs {listed}; {outputs_advice(outputs, f'securegaze describe {path}')}")
