"""Reading an ONNX graph: parse and check a file, shapes of its values, its real inputs.

The lowest bundle module: the manifest checks, the ONNX Runtime bundle and the ONNX -> PyTorch
conversion all read graphs through these helpers, and it imports none of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import helper, numpy_helper
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from securegaze.errors import InputFileError, ModelFormatError
from securegaze.io import hash_file_into

#: How to turn a model whose weights sit in external data files into one self-contained file.
ONE_FILE_HINT = "save it as one file: python -c \"import onnx; onnx.save(onnx.load('IN.onnx'), 'OUT.onnx')\""


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


def copy_model(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy of ``proto``: the rewrites of the bundle modules never change the graph they were given."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The graph's inputs that are fed at run time (not weights)."""
    # Old exporters list every initializer as a graph input too; those are weights, not inputs.
    initializers = {t.name for t in graph.initializer}
    return [v for v in graph.input if v.name not in initializers]


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph holds: its initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _graph_tensors(sub)


def external_data_files(proto: onnx.ModelProto) -> list[str]:
    """The external data files (``location`` as written in the model) its tensors are stored in."""
    files = []
    for tensor in _graph_tensors(proto.graph):
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            if location not in files:
                files.append(location)
    return files


def external_data_paths(path: Path, proto: onnx.ModelProto) -> list[Path]:
    """The external data files of the model in ``path`` (parsed as ``proto`` without them), each checked:
    a relative location inside the model's folder (no absolute path, no ``..``) naming an existing file.
    One :class:`ModelFormatError` / :class:`InputFileError` line otherwise."""
    folder = path.resolve().parent
    paths = []
    for location in external_data_files(proto):
        candidate = Path(location)
        inside = (folder / candidate).resolve()
        if candidate.is_absolute() or ".." in candidate.parts or folder not in inside.parents:
            raise ModelFormatError(f"{path} names the external data file {location!r}, outside the model's folder; "
                                   f"only files beside the .onnx are read ({ONE_FILE_HINT})")
        if not inside.is_file():
            raise InputFileError(f"{path} keeps its weights in the external data file {location!r}, which is "
                                 f"not in {folder}: copy it beside the .onnx, or {ONE_FILE_HINT}")
        paths.append(inside)
    return paths


def onnx_sha256(path: str | Path) -> str:
    """The sha256 an ONNX model is known by (manifests, audit records, engine caches): of the .onnx file;
    for one whose weights sit in external data files, of the .onnx file and then of each such file
    (its location as the graph writes it, then its bytes) in the order the graph first names them, so
    that no weight can change unseen."""
    import hashlib

    path = Path(path)
    digest = hash_file_into(hashlib.sha256(), path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not parseable: the file's own bytes are all there is to hash
        return digest.hexdigest()
    external = external_data_files(proto)
    if not external:
        return digest.hexdigest()
    for location, data in zip(external, external_data_paths(path, proto), strict=True):
        digest.update(b"\0external:" + location.encode() + b"\0")
        hash_file_into(digest, data)
    return digest.hexdigest()


def _constant_values(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Tensors of known value by name: initializers and the outputs of Constant nodes."""
    values = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = attr.t
    return values


def training_mode_nodes(graph: onnx.GraphProto) -> list[str]:
    """Nodes that run as in training: BatchNormalization with ``training_mode`` = 1 (opset 14+) or
    with its running-statistics outputs in use (older opsets), Dropout whose ``training_mode`` input
    is not a constant false. Each is ``"<op> '<node name>' (<what it does>)"``."""
    constants = _constant_values(graph)
    found = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        what = None
        if node.op_type == "BatchNormalization":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("training_mode", 0) or any(node.output[1:]):
                what = "normalises with the batch's statistics"
        elif node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
            flag = constants.get(node.input[2])
            if flag is None or numpy_helper.to_array(flag).any():
                what = "drops activations at random"
        if what:
            found.append(f"{node.op_type} {node.name or node.output[0]!r} ({what})")
    return found


def load_onnx(path: Path) -> onnx.ModelProto:
    """Parse and check an ONNX file; one clear error line for truncated, corrupt or invalid files.

    A model whose weights sit in external data files (torch's exporter writes ``NAME.onnx.data`` beside
    the graph) is read with them when each lies in the model's folder (:func:`external_data_paths`);
    its sha256 then covers them too (:func:`onnx_sha256`). Refused: a graph exported in training mode
    (:func:`training_mode_nodes`: batch statistics and random dropout make its gaze depend on the
    batch and the draw).
    """
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, ...
        raise InputFileError(
            f"{path} is not a readable ONNX model (truncated or corrupt: {first_line(exc)})"
        ) from None
    if len(proto.graph.node) == 0 or len(proto.graph.output) == 0:
        raise InputFileError(f"{path} holds no ONNX graph (empty file, or truncated or corrupt)")
    if external_data_paths(path, proto):
        try:
            load_external_data_for_model(proto, str(Path(path).resolve().parent))
        except Exception as exc:  # a truncated data file, ...
            raise ModelFormatError(f"{path}: its external weights cannot be read ({first_line(exc)}); "
                                   f"{ONE_FILE_HINT}") from None
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        first = first_line(exc)
        raise ModelFormatError(f"{path} fails the ONNX checker (truncated or corrupt?): {first}") from None
    training = training_mode_nodes(proto.graph)
    if training:
        more = f" (and {len(training) - 1} more)" if len(training) > 1 else ""
        raise ModelFormatError(
            f"{path} was exported in training mode: {training[0]}{more}, so its gaze would depend on the batch "
            "or on chance; re-export it after model.eval() (torch.onnx.export's default, "
            "training=TrainingMode.EVAL)"
        )
    return proto


def with_inferred_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with inferred shapes where possible (unchanged if shape inference fails)."""
    try:
        return onnx.shape_inference.infer_shapes(proto)
    except Exception:
        return proto
