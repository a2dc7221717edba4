"""Reading an ONNX graph: parse and check a file, shapes of its values, its real inputs.

The lowest bundle module: the manifest checks, the ONNX Runtime bundle and the ONNX -> PyTorch
conversion all read graphs through these helpers, and it imports none of them.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from securegaze.errors import InputFileError, ModelFormatError


def first_line(exc: BaseException) -> str:
    """An exception as one line: libraries (onnx checker, ONNX Runtime) raise multi-line messages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def value_dims(value_info: onnx.ValueInfoProto) -> list[int | str] | None:
    """Shape of a graph value: ints for fixed dims, names (or "?") for dynamic ones; None if unknown."""
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim]


def shape_text(dims: list[int | str] | None) -> str:
    """``(N, 3, 64, 64)`` for error lines; "unknown" when the shape is not known."""
    return "unknown" if dims is None else "(" + ", ".join(str(d) for d in dims) + ")"


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The graph's inputs that are fed at run time (not weights)."""
    # Old exporters list every initializer as a graph input too; those are weights, not inputs.
    initializers = {t.name for t in graph.initializer}
    return [v for v in graph.input if v.name not in initializers]


def load_onnx(path: Path) -> onnx.ModelProto:
    """Parse and check an ONNX file; one clear error line for truncated, corrupt or invalid files."""
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, external-data errors, ...
        raise InputFileError(
            f"{path} is not a readable ONNX model (truncated or corrupt: {first_line(exc)})"
        ) from None
    if len(proto.graph.node) == 0 or len(proto.graph.output) == 0:
        raise InputFileError(f"{path} holds no ONNX graph (empty file, or truncated or corrupt)")
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        first = first_line(exc)
        raise ModelFormatError(f"{path} fails the ONNX checker (truncated or corrupt?): {first}") from None
    return proto


def with_inferred_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with inferred shapes where possible (unchanged if shape inference fails)."""
    try:
        return onnx.shape_inference.infer_shapes(proto)
    except Exception:
        return proto
