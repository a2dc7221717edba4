"""Graph forms of third-party gaze models that are read without a re-export.

These forms are common outside this project and say what they are in their shapes (or, for the
units, in the model's answers), so a user's file is adapted instead of refused:

* **a grey input** (N, 1, H, W), as near-infrared driver cameras give: each RGB face is read as its
  luma through a 1x1 convolution put in front;
* **a uint8 image input** whose every reader is a Cast to float (a graph exported for raw 8-bit
  pixels that converts them itself): the input is made float32 with a Mul by 255 in front, so it takes
  RGB in [0, 1] as every caller gives it;
* **a channels-last image input** (N, H, W, 3) or (N, H, W, 1), as TensorFlow / Keras models are exported: a
  Transpose is put in front, so the graph takes the project's (N, 3, H, W) and every caller (ONNX
  Runtime, the PyTorch conversion for the scan, a TensorRT engine) sees one layout;
* **the gaze in another shape** and no (N, 2) output (:mod:`securegaze.bundle.output_forms`): an
  (N, 1, 2) or (N, 2, 1) output is flattened to (N, 2); two (N, 1) outputs whose names say pitch and
  yaw are put side by side as one (N, 2) output; a (2,) output of a graph for batches of one is
  reshaped to (1, 2);
* **several outputs, one of them (N, 2)** (the gaze beside features, logits or per-eye extras), in a
  bare file with no manifest to name the gaze: that output is the graph's only one;
* **a 3-D gaze vector output** (N, 3) and no (N, 2) output: the vector (x right, y down, z forward,
  the normalised camera frame of the conventions) is turned into (pitch, yaw) radians inside the
  graph, pitch = atan2(-y, sqrt(x^2 + z^2)), yaw = atan2(-x, -z). ONNX has no Atan2 below opset 22,
  so each is written with the half-angle form atan2(a, b) = 2 atan(a / (sqrt(a^2 + b^2) + b)), which
  holds for every direction but straight away from the camera. Many (N, 3) outputs are no gaze
  vector ((pitch, yaw, sigma) as Gaze360-style models give, (pitch, yaw, roll)), so the output is first
  asked on the probe's faces (:func:`securegaze.bundle.output_forms.vector_problem`): it is read as a
  vector only when its length is a unit vector's or the same on every face, and it points towards the
  camera; otherwise it is refused in one line. Its angles are radians by construction: the degrees
  found from a bare file's answers (below) never apply to them (:func:`angles_from_vector`), and a
  manifest that declares degrees or (yaw, pitch) order for it is refused;
* **a gaze in degrees, or in (yaw, pitch) order**, as a manifest beside the file declares it
  (``output.units``, ``output.order``), or, for a bare file, degrees found from the model's own
  answers (:func:`degrees_note`): the swap and the scaling are appended to the graph.

The file is not changed: its sha256 (the audit key) stays the file's, and the adaptation is
deterministic in the file's contents and its manifest (which the audit key covers through
``ModelFile.reading``). Each one adds a note that the bundle and the scan report keep.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from securegaze.bundle.onnx_graph import copy_model, real_inputs, shape_text, value_dims, with_inferred_shapes
from securegaze.bundle.output_forms import read_output_forms, vector_problem
from securegaze.errors import ModelFormatError

__all__ = ["adapt_graph", "angles_from_vector", "degrees_note", "probe_faces", "reads_as_degrees",
           "with_output_convention"]

#: Added to the half-angle denominators: a zero vector gives (0, 0) instead of NaN.
_EPS = 1e-12


def adapt_graph(path: Path, proto: onnx.ModelProto, output=None, input_spec=None,
                probe: bool = True) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """``proto`` with the forms above adapted (a copy; ``proto`` itself when nothing applies) and one
    note per adaptation, naming the file. ``output``: the manifest's ``OutputSpec`` (None for a bare
    file: only then is one output chosen among several); ``input_spec``: the manifest's ``InputSpec``
    (its size and pixel conversion feed the probe of an (N, 3) output; None: the graph's size, RGB in
    [0, 1]). ``probe`` False skips that probe (for a look at the input's shape only)."""
    bare = output is None
    graph = with_inferred_shapes(proto).graph
    notes: list[str] = []
    adapted = None
    inputs = real_inputs(graph)
    dims = value_dims(inputs[0]) if len(inputs) == 1 else None
    if len(inputs) == 1 and _casts_its_pixels(graph, inputs[0]):
        adapted = copy_model(proto)
        _float_input(adapted.graph, inputs[0].name)
        notes.append(f"{path.name}: its input {inputs[0].name!r} takes uint8 pixels (0..255), which the graph casts "
                     "to float first; read as float RGB in [0, 1] scaled by 255 in front")
    if dims is not None and len(dims) == 4:
        name = inputs[0].name
        if dims[3] in (1, 3) and dims[1] not in (1, 3):
            adapted = adapted or copy_model(proto)
            _channels_first_input(adapted.graph, name)
            notes.append(f"{path.name}: its input {name!r} is channels-last {shape_text(dims)}; read as "
                         f"(N, {dims[3]}, {dims[1]}, {dims[2]}) through a Transpose in front")
            dims = [dims[0], dims[3], dims[1], dims[2]]
        if dims[1] == 1:
            adapted = adapted or copy_model(proto)
            _grey_input(adapted.graph, name)
            notes.append(f"{path.name}: its input {name!r} has one grey channel; RGB faces are read as their luma "
                         "(0.299 R + 0.587 G + 0.114 B, ITU-R BT.601) through a 1x1 convolution in front")
    shapes = {o.name: value_dims(o) for o in graph.output}
    if bare or output.decoding == "direct":
        adapted = read_output_forms(path, proto, adapted, shapes, None if bare else output.names[0],
                                    dims[0] if dims else None, notes)
    pairs = [n for n, d in shapes.items() if d is not None and len(d) == 2 and d[1] == 2]
    vectors = [n for n, d in shapes.items() if d is not None and len(d) == 2 and d[1] == 3]
    if bare and len(shapes) > 1 and len(pairs) == 1:
        adapted = adapted or copy_model(proto)
        kept = [o for o in adapted.graph.output if o.name == pairs[0]]
        del adapted.graph.output[:]
        adapted.graph.output.extend(kept)
        others = ", ".join(repr(n) for n in shapes if n != pairs[0])
        notes.append(f"{path.name}: of its {len(shapes)} outputs the one of shape (N, 2), {pairs[0]!r}, is read as "
                     f"the gaze (left unread: {others})")
    elif not pairs and len(vectors) == 1:
        size = input_spec.size if input_spec is not None else (
            dims[2] if dims and len(dims) == 4 and isinstance(dims[2], int) and dims[2] == dims[3] else None)
        batch = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None
        problem = None if not probe or size is None or len(inputs) != 1 else vector_problem(
            adapted or proto, vectors[0], inputs[0].name, probe_faces(size), batch, input_spec)
        if problem:
            raise ModelFormatError(
                f"{path} output {vectors[0]!r} has shape {shape_text(shapes[vectors[0]])} but is no 3-D gaze vector: "
                f"{problem}; only (N, 2) (pitch, yaw) radians, a 3-D gaze vector (x right, y down, z forward) or "
                "binned logits are read: if its columns are angles and something else, e.g. (pitch, yaw, sigma), "
                "export the two angle columns as the output (return out[:, :2]; securegaze describe --output "
                "picks an output, not columns)")
        if output is not None and output.decoding == "direct" and output.names[0] == vectors[0] and (
                output.units, output.order) != ("radians", PITCH_YAW):
            raise ModelFormatError(
                f"{path} output {vectors[0]!r} is a 3-D gaze vector, read as (pitch, yaw) radians by construction, "
                f"but its manifest declares units {output.units!r} and order {'/'.join(output.order)}: describe it "
                f"again without --units and --order (securegaze describe {path} --force)")
        adapted = adapted or copy_model(proto)
        _vector_to_angles(adapted.graph, vectors[0])
        notes.append(f"{path.name}: its output {vectors[0]!r} is a 3-D gaze vector; read as (pitch, yaw) radians "
                     "with x right, y down, z forward (the project's convention: pitch = atan2(-y, sqrt(x^2 + z^2)), "
                     "yaw = atan2(-x, -z))")
    if output is not None and output.decoding == "direct" and (output.units, output.order) != ("radians", PITCH_YAW):
        adapted = adapted or copy_model(proto)
        swap = tuple(output.order) != PITCH_YAW
        with_output_convention(adapted, output.names[0], degrees=output.units == "degrees", swap=swap)
        said = " and ".join(w for w, on in (("in (yaw, pitch) order", swap), ("in degrees", output.units == "degrees"))
                            if on)
        notes.append(f"{path.name}: its manifest declares the gaze {said}; read as (pitch, yaw) radians")
    return (proto if adapted is None else adapted), tuple(notes)


PITCH_YAW = ("pitch", "yaw")
#: How many synthetic faces :func:`degrees_note` asks, and the share of them that may reach past 90
#: degrees read as radians before the answers are taken for degrees.
PROBE_FACES, PROBE_QUANTILE = 32, 0.95


def with_output_convention(proto: onnx.ModelProto, name: str, degrees: bool, swap: bool) -> onnx.ModelProto:
    """``proto`` (changed in place) with its (N, 2) output ``name`` turned into (pitch, yaw) radians:
    its two columns swapped and / or scaled by pi / 180."""
    graph = proto.graph
    raw = _behind_output(graph, name, "as_given")
    steps = ([("Gather", np.array([1, 0], np.int64), {"axis": 1})] if swap else []) + \
        ([("Mul", np.float32(np.pi / 180.0), {})] if degrees else [])
    current = raw
    for i, (kind, value, attrs) in enumerate(steps):
        constant = f"{name}__convention_{i}"
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), constant))
        out = name if i == len(steps) - 1 else f"{name}__convention_out_{i}"
        graph.node.append(helper.make_node(kind, [current, constant], [out], name=f"{constant}_{kind.lower()}",
                                           **attrs))
        current = out
    return proto


def angles_from_vector(proto: onnx.ModelProto) -> bool:
    """Whether :func:`adapt_graph` turned the gaze of ``proto`` from a 3-D vector into (pitch, yaw):
    those angles are radians by construction, so no unit is looked for in its answers."""
    return any(node.name.endswith("__angles_concat") for node in proto.graph.node)


def reads_as_degrees(reach: float) -> bool:
    """Whether answers whose larger angle reaches ``reach`` (as the model gives it, 95th percentile) are
    degrees: past pi / 2 (no face looks 90 degrees away in radians) and at most 90 (plausible in degrees)."""
    return bool(np.pi / 2 < reach <= 90.0)


def degrees_note(path: Path, predict, size: int) -> str | None:
    """Whether a bare file's gaze is in degrees, from its answers on :data:`PROBE_FACES` synthetic
    faces (the same faces for every file): a note when the :data:`PROBE_QUANTILE` quantile of the
    larger angle read as radians is past pi / 2 (no face looks 90 degrees away) and below 90 read as
    degrees, else None. A graph in radians never gets there; one fed another pixel range than it
    wants may answer almost constantly and is left to the scan's input check."""
    try:
        gaze = np.asarray(predict(probe_faces(size)), np.float64)
    except ModelFormatError:  # NaN answers and the like: the scan and the app say so in their own words
        return None
    if gaze.shape != (PROBE_FACES, 2) or not np.isfinite(gaze).all():
        return None
    reach = float(np.quantile(np.abs(gaze).max(axis=1), PROBE_QUANTILE))
    if not reads_as_degrees(reach):
        return None
    return (f"{path.name}: its gaze on {PROBE_FACES} synthetic faces reaches {reach:.1f} at the "
            f"{100 * PROBE_QUANTILE:.0f}th percentile: past any gaze in radians (pi / 2 is 90 deg), plausible in "
            "degrees; read as degrees (a manifest.json beside it declaring output.units settles it either way)")


#: Seed of the probe's faces.
PROBE_SEED = 90


@functools.lru_cache(maxsize=4)
def probe_faces(size: int) -> np.ndarray:
    """:data:`PROBE_FACES` synthetic faces looking in varied directions, (N, 3, size, size) float32 RGB in
    [0, 1], the same for every model of that size (rendered once per size and process: every load of a
    bare file asks; read-only)."""
    from securegaze.data.synthetic import render_dataset

    drawn = min(max(size, 16), 512)  # the renderer's range; other sizes are resampled (nearest pixel)
    faces = render_dataset(PROBE_FACES, drawn, seed=PROBE_SEED).images.transpose(0, 3, 1, 2)
    if drawn != size:
        pick = (np.arange(size) * drawn) // size
        faces = faces[:, :, pick][:, :, :, pick]
    faces = np.ascontiguousarray(faces, dtype=np.float32) / 255.0
    faces.flags.writeable = False
    return faces


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _behind_output(graph: onnx.GraphProto, name: str, tag: str) -> str:
    """Rename the graph output ``name`` where it is made and used to a new inner tensor, from which the
    caller's nodes behind it make ``name`` again; returns the inner name."""
    inner = f"{name}__{tag}"
    for node in graph.node:
        for i, out in enumerate(node.output):
            if out == name:
                node.output[i] = inner
    _rename_uses(graph, name, inner)
    return inner


def _in_front(graph: onnx.GraphProto, name: str, tag: str) -> str:
    """Rename every use of the graph input ``name`` to a new inner tensor, which the caller's node in
    front makes from the input; returns the inner name."""
    inner = f"{name}__{tag}"
    _rename_uses(graph, name, inner)
    for value in graph.value_info:
        if value.name == name:
            value.name = inner
    return inner


def _input_dims(graph: onnx.GraphProto, name: str) -> list:
    return list(next(v for v in graph.input if v.name == name).type.tensor_type.shape.dim)


def _set_input_dims(graph: onnx.GraphProto, name: str, dims: list) -> None:
    shape = next(v for v in graph.input if v.name == name).type.tensor_type.shape
    del shape.dim[:]
    shape.dim.extend(dims)


def _channels_first_input(graph: onnx.GraphProto, name: str) -> None:
    inner = _in_front(graph, name, "channels_last")
    n, h, w, c = (_copy_dim(d) for d in _input_dims(graph, name))
    _set_input_dims(graph, name, [n, c, h, w])
    graph.node.insert(0, helper.make_node("Transpose", [name], [inner], name=f"{inner}__transpose",
                                          perm=[0, 2, 3, 1]))


def _casts_its_pixels(graph: onnx.GraphProto, value: onnx.ValueInfoProto) -> bool:
    """Whether the input ``value`` is uint8 and every node that reads it is a Cast to float32 (a graph
    exported for raw 8-bit images that converts them itself): then it takes float values as well."""
    if value.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
        return False
    readers = [node for node in graph.node if value.name in node.input]
    return bool(readers) and all(
        node.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in node.attribute)
        for node in readers)


def _float_input(graph: onnx.GraphProto, name: str) -> None:
    """The uint8 input ``name`` made float32, multiplied by 255 in front (RGB in [0, 1] -> 0..255), so
    its casts to float receive what they did; the casts stay (float to float)."""
    inner = _in_front(graph, name, "uint8")
    next(v for v in graph.input if v.name == name).type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    scale = f"{inner}__scale"
    graph.initializer.append(numpy_helper.from_array(np.array(255.0, np.float32), scale))
    graph.node.insert(0, helper.make_node("Mul", [name, scale], [inner], name=f"{inner}__mul"))


def _grey_input(graph: onnx.GraphProto, name: str) -> None:
    inner = _in_front(graph, name, "grey")
    dims = [_copy_dim(d) for d in _input_dims(graph, name)]
    dims[1].Clear()
    dims[1].dim_value = 3
    _set_input_dims(graph, name, dims)
    weight = f"{inner}__luma"
    graph.initializer.append(numpy_helper.from_array(np.array([0.299, 0.587, 0.114], np.float32).reshape(1, 3, 1, 1),
                                                     weight))
    graph.node.insert(0, helper.make_node("Conv", [name, weight], [inner], name=f"{inner}__conv"))


def _copy_dim(dim) -> onnx.TensorShapeProto.Dimension:
    out = onnx.TensorShapeProto.Dimension()
    out.CopyFrom(dim)
    return out


def _vector_to_angles(graph: onnx.GraphProto, name: str) -> None:
    vector = _behind_output(graph, name, "vector")
    p = f"{name}__angles"

    def const(suffix: str, value) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), f"{p}_{suffix}"))
        return f"{p}_{suffix}"

    nodes: list[onnx.NodeProto] = []

    def op(kind: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(kind, inputs, [f"{p}_{out}"], name=f"{p}_{out}", **attrs))
        return f"{p}_{out}"

    x, y, z = (op("Gather", [vector, const(f"i{i}", np.int64(i))], axis, axis=1) for i, axis in enumerate("xyz"))
    two, eps = const("two", np.float32(2.0)), const("eps", np.float32(_EPS))
    xz = op("Sqrt", [op("Add", [op("Mul", [x, x], "xx"), op("Mul", [z, z], "zz")], "xz2")], "xz")

    def atan2(a: str, b: str, tag: str) -> str:  # 2 atan(a / (sqrt(a^2 + b^2) + b))
        length = op("Sqrt", [op("Add", [op("Mul", [a, a], f"{tag}_aa"), op("Mul", [b, b], f"{tag}_bb")],
                                f"{tag}_ab2")], f"{tag}_len")
        below = op("Add", [op("Add", [length, b], f"{tag}_lb"), eps], f"{tag}_den")
        return op("Mul", [two, op("Atan", [op("Div", [a, below], f"{tag}_ratio")], f"{tag}_half")], tag)

    pitch = atan2(op("Neg", [y], "ny"), xz, "pitch")
    yaw = atan2(op("Neg", [x], "nx"), op("Neg", [z], "nz"), "yaw")
    column = const("column", np.array([-1, 1], np.int64))
    nodes.append(helper.make_node("Concat", [op("Reshape", [pitch, column], "pitch_col"),
                                             op("Reshape", [yaw, column], "yaw_col")], [name],
                                  name=f"{p}_concat", axis=1))
    graph.node.extend(nodes)
    out = next(o for o in graph.output if o.name == name)
    out.type.tensor_type.shape.dim[1].dim_value = 2
