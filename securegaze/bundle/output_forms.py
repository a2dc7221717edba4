"""Gaze outputs of third-party graphs in another shape than (N, 2), read without a re-export, and the
check that an (N, 3) output is a gaze vector before :mod:`securegaze.bundle.adapt` reads it as one.

Common export forms (each one note; the file is not changed):

* an (N, 1, 2) or (N, 2, 1) output (a gaze kept with an extra axis, ``unsqueeze``): a Flatten from
  axis 1 behind it gives (N, 2);
* two (N, 1) outputs whose names say which is the pitch and which the yaw (``pitch`` / ``yaw``, in
  any case and with other words around): a Concat behind them gives one (N, 2) output named
  ``<pitch>_<yaw>``, which a manifest names;
* a (2,) output of a graph exported for batches of one (``reshape(-1)``): a Reshape to (-1, 2).

Only a graph without an (N, 2) output gets them, and with a manifest only the output it names.

An (N, 3) output is read as a 3-D gaze vector only when it behaves like one on the probe's synthetic
faces (:func:`vector_problem`): its length is a unit vector's (median within :data:`UNIT_LENGTH`: a
normalised head gives 1, one trained on unit targets without a final normalisation stays near it) or
the same on every face (within :data:`CONSTANT_LENGTH`: a unit vector times a constant), and it
points towards the camera (z < 0) on all but :data:`AWAY_SHARE` of the faces. (pitch, yaw, sigma) or
(pitch, yaw, roll) outputs fail the first test, vectors in another frame the second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from securegaze.bundle.onnx_graph import copy_model, shape_text

__all__ = ["AWAY_SHARE", "CONSTANT_LENGTH", "UNIT_LENGTH", "read_output_forms", "vector_problem"]

#: The range of the median length of an (N, 3) output read as a unit gaze vector.
UNIT_LENGTH = (0.8, 1.25)
#: How far (a share of the median) every face's length may be from the median for a vector of one length.
CONSTANT_LENGTH = 0.05
#: The share of the probe's faces whose vector may point away from the camera.
AWAY_SHARE = 0.05


def _pair(dims) -> bool:
    return dims is not None and len(dims) == 2 and dims[1] == 2


def _column(dims) -> bool:
    return dims is not None and len(dims) == 2 and dims[1] == 1


def _reshaping(dims, batch: int | None) -> str | None:
    """How an output of shape ``dims`` becomes (N, 2): "flatten", "reshape", or None."""
    if dims is not None and len(dims) == 3 and dims[1:] in ([1, 2], [2, 1]):
        return "flatten"
    if dims == [2] and batch == 1:
        return "reshape"
    return None


def _pitch_and_yaw(shapes: dict) -> tuple[str, str] | None:
    """(pitch, yaw): the names of two (N, 1) outputs, the graph's only ones, that say which is which."""
    if len(shapes) != 2 or not all(_column(d) for d in shapes.values()):
        return None
    pitch = [n for n in shapes if "pitch" in n.lower() and "yaw" not in n.lower()]
    yaw = [n for n in shapes if "yaw" in n.lower() and "pitch" not in n.lower()]
    return (pitch[0], yaw[0]) if len(pitch) == 1 and len(yaw) == 1 else None


def _fresh_name(graph: onnx.GraphProto, wanted: str) -> str:
    taken = {o for node in graph.node for o in node.output} | {v.name for v in graph.input}
    taken |= {t.name for t in graph.initializer}
    return wanted if wanted not in taken else f"{wanted}__gaze"


def _set_output(graph: onnx.GraphProto, name: str, first, elem_type: int | None = None) -> None:
    """The graph output ``name`` declared as (first, 2)."""
    value = next(o for o in graph.output if o.name == name)
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for d in (first, 2):
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif d and d != "?":
            dim.dim_param = d
    if elem_type is not None:
        value.type.tensor_type.elem_type = elem_type


def _behind(graph: onnx.GraphProto, name: str, tag: str) -> str:
    """Rename the output ``name`` where it is made and used to an inner tensor; returns the inner name."""
    inner = f"{name}__{tag}"
    for node in graph.node:
        for i, out in enumerate(node.output):
            if out == name:
                node.output[i] = inner
        for i, used in enumerate(node.input):
            if used == name:
                node.input[i] = inner
    return inner


def read_output_forms(path: Path, proto: onnx.ModelProto, adapted: onnx.ModelProto | None, shapes: dict,
                      named: str | None, batch, notes: list[str]) -> onnx.ModelProto | None:
    """The forms above, applied to ``adapted`` (or a copy of ``proto`` made when one applies; returned,
    None when none did and ``adapted`` was None). ``shapes``: output name -> dims, updated in place;
    ``named``: the output a manifest names (None: a bare file); ``batch``: the input's first dimension;
    each adaptation appends its note to ``notes``."""
    if any(_pair(d) for d in shapes.values()):
        return adapted
    found = _pitch_and_yaw(shapes)
    if found is not None:
        pitch, yaw = found
        name = _fresh_name(proto.graph, f"{pitch}_{yaw}")
        if named is not None and named != name:
            return adapted
        adapted = adapted or copy_model(proto)
        graph = adapted.graph
        elem_type = next(o for o in graph.output if o.name == pitch).type.tensor_type.elem_type
        graph.node.append(helper.make_node("Concat", [pitch, yaw], [name], name=f"{name}__concat", axis=1))
        del graph.output[:]
        graph.output.append(helper.make_tensor_value_info(name, elem_type, None))
        _set_output(graph, name, shapes[pitch][0])
        notes.append(f"{path.name}: its outputs {pitch!r} and {yaw!r}, each (N, 1), are read together as the gaze "
                     f"(pitch, yaw), output {name!r}")
        first = shapes[pitch][0]
        shapes.clear()
        shapes[name] = [first, 2]
        return adapted
    reshaped = [n for n, d in shapes.items() if _reshaping(d, batch) and (named is None or n == named)]
    if len(reshaped) != 1:
        return adapted
    name, dims = reshaped[0], shapes[reshaped[0]]
    adapted = adapted or copy_model(proto)
    graph = adapted.graph
    inner = _behind(graph, name, "as_given")
    if _reshaping(dims, batch) == "flatten":
        graph.node.append(helper.make_node("Flatten", [inner], [name], name=f"{name}__flatten", axis=1))
        first, how = dims[0], "a Flatten"
    else:
        graph.initializer.append(numpy_helper.from_array(np.array([-1, 2], np.int64), f"{name}__pairs"))
        graph.node.append(helper.make_node("Reshape", [inner, f"{name}__pairs"], [name], name=f"{name}__reshape"))
        first, how = 1, "a Reshape (its graph reads one face at a time)"
    _set_output(graph, name, first)
    shapes[name] = [first, 2]
    notes.append(f"{path.name}: its output {name!r} has shape {shape_text(dims)}; read as (N, 2) (pitch, yaw) "
                 f"through {how}")
    return adapted


def _vector_rows(proto: onnx.ModelProto, vector: str, input_name: str, faces: np.ndarray, batch: int | None,
                 input_spec) -> np.ndarray | None:
    """The (N, 3) output ``vector`` of the graph on ``faces`` (RGB in [0, 1], converted as ``input_spec``
    declares), float64; None when ONNX Runtime cannot run it (the bundle then says why in its words)."""
    import onnxruntime as ort

    if input_spec is not None and not input_spec.is_identity():
        flip, scale, offset = input_spec.affine()
        faces = (faces[:, ::-1] if flip else faces) * scale[None, :, None, None] + offset[None, :, None, None]
    faces = np.ascontiguousarray(faces, dtype=np.float32)
    probe = copy_model(proto)
    kept = [o for o in probe.graph.output if o.name == vector]
    del probe.graph.output[:]
    probe.graph.output.extend(kept)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    step, rows = batch or len(faces), []
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        for start in range(0, len(faces), step):
            part = faces[start:start + step]
            n = len(part)
            if n < step:
                part = np.concatenate([part, np.repeat(part[-1:], step - n, axis=0)])
            rows.append(np.asarray(session.run([vector], {input_name: part})[0], np.float64)[:n])
    except Exception:  # noqa: BLE001 - ONNX Runtime's own error comes when the bundle opens it
        return None
    out = np.concatenate(rows)
    return out if out.shape == (len(faces), 3) and np.isfinite(out).all() else None


def vector_problem(proto: onnx.ModelProto, vector: str, input_name: str, faces: np.ndarray, batch: int | None,
                   input_spec=None) -> str | None:
    """Why the (N, 3) output ``vector`` of ``proto`` is no gaze vector on ``faces`` (the probe's), as a
    clause for an error line, or None when it reads as one (or cannot be run here)."""
    rows = _vector_rows(proto, vector, input_name, faces, batch, input_spec)
    if rows is None:
        return None
    n, lengths = len(rows), np.linalg.norm(rows, axis=1)
    median = float(np.median(lengths))
    unit = UNIT_LENGTH[0] <= median <= UNIT_LENGTH[1]
    constant = median > 0 and float(np.max(np.abs(lengths / median - 1))) <= CONSTANT_LENGTH
    if not (unit or constant):
        return (f"its length on {n} synthetic faces is {lengths.min():.2f}..{lengths.max():.2f} (median {median:.2f}), "
                f"where a gaze vector's has a median of {UNIT_LENGTH[0]:g}..{UNIT_LENGTH[1]:g} or is the same on every "
                f"face (within {CONSTANT_LENGTH:.0%})")
    away = int((rows[:, 2] >= 0).sum())
    if away > AWAY_SHARE * n:
        return (f"it points away from the camera (z >= 0) on {away} of {n} synthetic faces, where a face looking "
                "towards the camera has z < 0")
    return None
