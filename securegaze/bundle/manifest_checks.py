"""A bundle's manifest against its files: read and validate it, check the ONNX file's hash and graph,
or infer a manifest for a bare ONNX file from its graph.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import onnx
from pydantic import ValidationError

from securegaze.bundle.manifest import MANIFEST_NAME, BundleManifest, validation_line
from securegaze.bundle.onnx_graph import (
    onnx_sha256,
    real_inputs,
    shape_text,
    value_dims,
    with_inferred_shapes,
)
from securegaze.errors import InputFileError, ModelFormatError


def read_manifest(path: Path) -> BundleManifest:
    """The validated manifest at ``path``; one error line for unreadable text, bad JSON or bad fields."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path} cannot be read as UTF-8 text ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "expected a bundle manifest"
        ) from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path} holds a JSON {type(data).__name__}; expected a manifest object")
    try:
        return BundleManifest.model_validate(data)
    except ValidationError as exc:
        raise ModelFormatError(f"{path} is not a valid bundle manifest: {validation_line(exc)}") from None


def checked_onnx_path(manifest_path: Path, manifest: BundleManifest) -> Path:
    """The ONNX file the manifest names, which must exist and have the manifest's sha256."""
    onnx_path = manifest_path.parent / manifest.onnx_file
    if not onnx_path.is_file():
        raise InputFileError(f"{onnx_path} not found; {manifest_path} names it as the bundle's model")
    actual = onnx_sha256(onnx_path)
    if actual != manifest.onnx_sha256:
        raise ModelFormatError(
            f"{onnx_path} sha256 {actual[:12]}… does not match manifest {manifest.onnx_sha256[:12]}…; "
            f"the file was changed or corrupted; if it was re-exported on purpose, securegaze describe {onnx_path} "
            "--force (with the options it was described with) rewrites the manifest"
        )
    return onnx_path


def unsupported_input(dims: list[int | str] | None) -> str | None:
    """Why an input of shape ``dims`` can never be read, manifest or not (None: it may be).

    The manifest describes only (N, 3, S, S) float32 images, so a channels-last, non-colour or
    non-square input needs the model changed, not a manifest written.
    """
    if dims is None:
        return None
    if len(dims) != 4:
        return f"it has {len(dims)} dimensions; an image input is (N, 3, S, S)"
    channels, height, width = dims[1:]
    if dims[3] == 3 and channels != 3:
        return ("it is channels-last (N, H, W, 3); only channels-first (N, 3, S, S) models are read: re-export "
                "the model with NCHW input (or a Transpose in front)")
    if isinstance(channels, int) and channels != 3:
        return (f"it has {channels} channel(s); colour (N, 3, S, S) or (N, S, S, 3) and grey (N, 1, S, S) or "
                "(N, S, S, 1) inputs are read")
    if isinstance(height, int) and isinstance(width, int) and height != width:
        return (f"it is not square ({height}x{width} px, height x width); only square (N, 3, S, S) input is read: "
                "re-export the model for a square face crop")
    return None


_WHOLE_NUMBER_TYPES = {onnx.TensorProto.UINT8, onnx.TensorProto.INT8, onnx.TensorProto.UINT16,
                       onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64}


def _check_input_type(path: Path, value: onnx.ValueInfoProto) -> None:
    elem = value.type.tensor_type.elem_type
    if elem in _WHOLE_NUMBER_TYPES:
        # The graph declares whole-number pixels and converts them itself: its weights are not the cause.
        name = onnx.TensorProto.DataType.Name(elem).lower()
        raise ModelFormatError(
            f"{path} input {value.name!r} is {name} (whole-number pixels the graph converts itself); only float32 "
            "input is read: export it with a float32 input (a float example input to torch.onnx.export and no cast "
            "of it in forward), pixels in 0..1, or in 0..255 declared with securegaze describe "
            f"{path} --value-range 0,255"
        )
    if elem != onnx.TensorProto.FLOAT:
        name = onnx.TensorProto.DataType.Name(elem).lower() if elem else "of unknown type"
        raise ModelFormatError(
            f"{path} input {value.name!r} is {name}; only float32 input is read: re-export the model in float32 "
            "(e.g. model.float() before torch.onnx.export)"
        )


def input_as_given(proto: onnx.ModelProto | None) -> list[int | str] | None:
    """The shape of the one real input of ``proto`` (the graph as the file has it, before
    :func:`securegaze.bundle.adapt.adapt_graph`), for error lines; None when unknown or not one input."""
    if proto is None:
        return None
    inputs = real_inputs(with_inferred_shapes(proto).graph)
    return value_dims(inputs[0]) if len(inputs) == 1 else None


def outputs_advice(shapes: list[tuple[str, list | None]], advice: str) -> str:
    """What a bare file's outputs need, by what they are: a choice among gaze-shaped outputs (describe
    --output), binned logits (describe --bins), or a re-export when nothing here can read them."""
    def width(d, k):
        return d is not None and len(d) == 2 and d[1] == k
    gaze_like = [n for n, d in shapes if width(d, 2) or width(d, 3)]
    logits = [n for n, d in shapes if d is not None and len(d) == 2 and isinstance(d[1], int) and d[1] > 3]
    ways = []
    if len(gaze_like) > 1:
        ways.append(f"name the gaze among them: {advice} --output NAME")
    if len(logits) >= 2:
        ways.append(f"for binned logits: {advice} --bins COUNT,START_DEG,WIDTH_DEG --outputs PITCH,YAW")
    if not ways:
        ways.append("no declaration in a manifest reads these: re-export the model with one (N, 2) (pitch, yaw) "
                    "output (e.g. torch.cat([pitch, yaw], 1))")
    return "; ".join(ways)


def infer_manifest(path: Path, proto: onnx.ModelProto, as_given: onnx.ModelProto | None = None) -> BundleManifest:
    """A manifest for a bare .onnx: size from the input shape, direct decoding if one (N, 2) output.
    ``as_given``: the file's graph before adaptation (its input shape is what error lines show)."""
    graph = with_inferred_shapes(proto).graph
    inputs = real_inputs(graph)
    advice = f"describe it in a {MANIFEST_NAME} beside it: securegaze describe {path}"
    if len(inputs) != 1:
        names = ", ".join(repr(v.name) for v in inputs)
        raise ModelFormatError(
            f"{path} has {len(inputs)} inputs ({names or 'none'}); only models with one image input are read"
        )
    dims = value_dims(inputs[0])
    problem = unsupported_input(dims)
    if problem:
        raise ModelFormatError(f"{path} input {inputs[0].name!r} has shape {shape_text(dims)}: {problem}")
    if dims is None or not isinstance(dims[2], int) or not isinstance(dims[3], int):
        given = input_as_given(as_given) or dims
        raise ModelFormatError(
            f"{path} input {inputs[0].name!r} has shape {shape_text(given)}: its height and width are not fixed, so "
            f"the input size cannot be read from the graph; {advice} --input-size SIZE"
        )
    _check_input_type(path, inputs[0])
    shapes = [(o.name, value_dims(o)) for o in graph.output]
    if len(shapes) == 1 and shapes[0][1] is not None and len(shapes[0][1]) == 2 and shapes[0][1][1] == 3:
        raise ModelFormatError(
            f"{path} output {shapes[0][0]!r} has shape {shape_text(shapes[0][1])} (a 3-D gaze vector?); only "
            "(N, 2) (pitch, yaw) radians or binned logits are read: add the conversion to the graph (for a unit "
            "vector with x right, y down, z forward: pitch = asin(-y), yaw = atan2(-x, -z))"
        )
    if len(shapes) != 1 or shapes[0][1] is None or len(shapes[0][1]) != 2 or shapes[0][1][1] != 2:
        listed = ", ".join(f"{n} {shape_text(d)}" for n, d in shapes)
        raise ModelFormatError(
            f"{path} has outputs {listed}; a bare .onnx is read only with one (N, 2) (pitch, yaw) radians "
            "output (also found among several, or as (N, 1, 2), a unit 3-D gaze vector (N, 3), or two (N, 1) "
            f"outputs named pitch and yaw); {outputs_advice(shapes, advice)}"
        )
    return BundleManifest(
        name=path.stem,
        architecture="onnx",
        config={"architecture": "onnx", "input_size": dims[2], "decoding": "direct"},
        input={"name": inputs[0].name, "size": dims[2]},
        output={"decoding": "direct", "names": [shapes[0][0]]},
        onnx_file=path.name,
        onnx_sha256=onnx_sha256(path),
        provenance={
            "created": datetime.fromtimestamp(path.stat().st_mtime, UTC),
            "notes": "manifest inferred from a bare ONNX file: units, order and convention are assumed",
        },
    )


def check_against_manifest(
    path: Path, manifest_path: Path | None, proto: onnx.ModelProto, manifest: BundleManifest
) -> int | None:
    """Input and output shapes must fit the manifest; returns the fixed batch size, if any."""
    graph = with_inferred_shapes(proto).graph
    source = manifest_path or path
    inputs = real_inputs(graph)
    by_name = {v.name: v for v in inputs}
    if manifest.input.name not in by_name or len(inputs) != 1:
        names = [v.name for v in inputs]
        raise ModelFormatError(
            f"{path} has inputs {names}; {source.name} declares one input {manifest.input.name!r}"
        )
    dims = value_dims(by_name[manifest.input.name])
    problem = unsupported_input(dims)
    if problem:
        raise ModelFormatError(f"{path} input {manifest.input.name!r} has shape {shape_text(dims)}: {problem}")
    _check_input_type(path, by_name[manifest.input.name])
    size = manifest.input.size
    expected = f"(N, 3, {size}, {size})"
    # Dynamic (named) dims accept anything; the manifest's size is then what predict enforces.
    fits = dims is None or (
        len(dims) == 4
        and all(isinstance(d, str) or d == want for d, want in zip(dims[1:], (3, size, size), strict=True))
    )
    if not fits:
        raise ModelFormatError(
            f"{path} takes input {manifest.input.name!r} of shape {shape_text(dims)} but {source.name} "
            f"declares {expected}"
        )
    fixed_batch = dims[0] if dims is not None and isinstance(dims[0], int) and dims[0] > 0 else None

    outputs = {o.name: value_dims(o) for o in graph.output}
    out = manifest.output
    for out_name in out.names:
        if out_name not in outputs:
            raise ModelFormatError(
                f"{path} has outputs {list(outputs)}; {source.name} names output {out_name!r}"
            )
    width = 2 if out.decoding == "direct" else out.bins.count
    for out_name in out.names:
        shape = outputs[out_name]
        if shape is not None and (len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != width)):
            what = "(N, 2) pitch/yaw" if out.decoding == "direct" else f"(N, {width}) bin logits"
            single = (" (two (N, 1) outputs are read together as the gaze when their names say pitch and yaw: "
                      "leave --output out)") if out.decoding == "direct" and shape[1:] == [1] else ""
            raise ModelFormatError(
                f"{path} output {out_name!r} has shape {shape_text(shape)}; {out.decoding} decoding in "
                f"{source.name} expects {what}{single}"
            )
    if manifest.feature_split is not None:
        tensor = manifest.feature_split.feature_tensor
        produced = {o for node in graph.node for o in node.output}
        if tensor not in produced:
            raise ModelFormatError(
                f"{source.name} declares feature_tensor {tensor!r} but {path} has no node output of that name"
            )
    return fixed_batch
