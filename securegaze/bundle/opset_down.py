"""Bring an ONNX graph of a newer opset down to the one onnx2torch reads (:func:`convertible`).

onnx2torch reads operator versions up to opset 17; torch 2.x exports at 18-20, and onnx's version
converter has no adapter down for several operators (Reshape 19 -> 18, for one). Most changes between
opset 17 and 21 only widen the tensor types an operator takes (float8, int4, bfloat16), which a gaze
model's float32 graph never uses, or add an attribute whose default keeps the old behaviour. The
reductions of opset 18 take their axes as an input instead of an attribute. :func:`to_opset` handles
exactly those: every node whose operator has the same version at both opsets is kept; a node whose
version differs is kept when its change is in :data:`TYPE_ONLY` (and it uses none of the new
attributes), rewritten when it is a reduction with constant axes, and anything else gives up (None).
Before that, :func:`decomposed` spells out in older operators the few that onnx2torch has no converter
for at any opset, or that exist only after 17: Gelu (opset 20: Erf or Tanh), Mish (18: Tanh of
Softplus), GlobalMaxPool (ReduceMax over the spatial axes of a 4-D input) and ReduceL2 (the square root
of ReduceSumSquare: torch writes it for ``F.normalize``).
The caller checks the converted PyTorch module against ONNX Runtime on the original graph.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import defs, helper, numpy_helper

from securegaze.bundle.onnx_graph import copy_model

#: The newest default-domain opset whose operator versions onnx2torch 1.5 converts (Identity, Pad,
#: Reshape, Cast, ... have newer versions from opset 18-21 that it has no converter for).
CONVERT_OPSET = 17

#: Operators whose versions after opset 17 (up to 23) only widen the tensor types, or add attributes
#: whose absence keeps the older meaning (the tuple lists those attributes).
TYPE_ONLY: dict[str, tuple[str, ...]] = {
    "Identity": (), "Reshape": (), "Cast": ("saturate",), "CastLike": ("saturate",), "Shape": (),
    "Size": (), "Constant": (), "ConstantOfShape": (), "Flatten": (), "Transpose": (), "Squeeze": (),
    "Unsqueeze": (), "Equal": (), "AveragePool": ("dilations",), "Pad": (),
    "Resize": ("antialias", "axes", "keep_aspect_ratio_policy"), "Split": ("num_outputs",), "IsNaN": (), "IsInf": (),
    # opset 22 adds bfloat16 to these (and nothing else)
    "Conv": (), "ConvTranspose": (), "MaxPool": (), "GlobalAveragePool": (), "GlobalMaxPool": (),
    "HardSigmoid": (), "HardSwish": (), "Elu": (), "Selu": (), "Softplus": (), "Softsign": (), "Mish": (),
    "ThresholdedRelu": (), "InstanceNormalization": (), "LpPool": (),
}
#: New attributes that keep the older meaning at these values (torch's newer exporter writes them out):
#: a node that sets them so is kept with them dropped.
NEW_ATTRIBUTE_DEFAULTS: dict[str, dict[str, object]] = {
    "Resize": {"antialias": 0, "keep_aspect_ratio_policy": b"stretch"},
    "Cast": {"saturate": 1}, "CastLike": {"saturate": 1},
}
#: The reductions whose axes moved from an attribute to an input at opset 18.
AXES_INPUT_18 = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                 "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


def _version(op: str, opset: int) -> int | None:
    try:
        return defs.get_schema(op, opset, "").since_version
    except Exception:  # noqa: BLE001 - no such operator at that opset
        return None


def _default_opset(proto: onnx.ModelProto) -> int | None:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def to_opset(proto: onnx.ModelProto, target: int) -> onnx.ModelProto | None:
    """A copy of ``proto`` at default-domain opset ``target`` (see the module docstring), or None when
    some node's change between the two opsets is not one of those handled."""
    opset = _default_opset(proto)
    if opset is None or opset <= target:
        return proto
    model = copy_model(proto)
    constants = _constants(model)  # torch's legacy exporter writes reduction axes as Constant nodes
    nodes = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        new, old = _version(node.op_type, opset), _version(node.op_type, target)
        if old is None:
            return None  # the operator did not exist yet
        defaults = NEW_ATTRIBUTE_DEFAULTS.get(node.op_type, {})
        if new != old and any(a.name in defaults for a in node.attribute):
            if any(a.name in defaults and helper.get_attribute_value(a) != defaults[a.name] for a in node.attribute):
                return None  # a new attribute used for its new meaning
            kept = [a for a in node.attribute if a.name not in defaults]
            del node.attribute[:]
            node.attribute.extend(kept)
        attrs = {a.name for a in node.attribute}
        if new == old:
            nodes.append(node)
        elif node.op_type in TYPE_ONLY and not attrs & set(TYPE_ONLY[node.op_type]) and \
                not (node.op_type == "Pad" and len(node.input) > 3) and \
                not (node.op_type == "Pad" and any(a.name == "mode" and a.s == b"wrap" for a in node.attribute)):
            nodes.append(node)
        elif node.op_type in AXES_INPUT_18 and old < 18:
            rewritten = _axes_as_attribute(node, constants)
            if rewritten is None:
                return None
            nodes.append(rewritten)
        else:
            return None
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = target
    try:
        onnx.checker.check_model(model)
    except Exception:  # noqa: BLE001 - a rewrite the checker refuses is no rewrite
        return None
    return model


def _constants(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """The graph's initializers and its Constant nodes' values, by name."""
    found = {t.name: t for t in model.graph.initializer}
    found.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                  if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value"})
    return found


def restore_reduction_axes(original: onnx.ModelProto, converted: onnx.ModelProto) -> onnx.ModelProto:
    """``converted`` (onnx's version converter's output) with each opset-18 reduction's constant axes, which
    onnx 1.17's converter drops (``axes=[]``: a reduction over nothing), written back as the attribute."""
    constants = _constants(original)
    axes_of = {}
    for node in original.graph.node:
        if node.op_type in AXES_INPUT_18 and len(node.input) > 1 and node.input[1] in constants:
            axes_of[node.output[0]] = [int(a) for a in numpy_helper.to_array(constants[node.input[1]]).reshape(-1)]
    for node in converted.graph.node:
        axes = axes_of.get(node.output[0]) if node.op_type in AXES_INPUT_18 and node.output else None
        if axes:
            kept = [a for a in node.attribute if a.name != "axes"]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("axes", axes)])
    return converted


def _axes_as_attribute(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> onnx.NodeProto | None:
    """A reduction of opset 18 (axes an optional input) in its opset-13 form (axes an attribute)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.pop("noop_with_empty_axes", 0):
        return None  # "no axes: do nothing" has no opset-13 spelling
    axes = None
    if len(node.input) > 1 and node.input[1]:
        tensor = constants.get(node.input[1])
        if tensor is None:
            return None  # axes computed at run time
        axes = [int(a) for a in numpy_helper.to_array(tensor).reshape(-1)]
    if axes:
        attrs["axes"] = axes
    return helper.make_node(node.op_type, [node.input[0]], list(node.output), name=node.name, **attrs)


def decomposed(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with every Gelu, Mish, ReduceL2 and 4-D GlobalMaxPool node written in operators that
    onnx2torch converts, at the graph's own opset (a copy; ``proto`` itself when there is none)."""
    wanted = {"Gelu", "Mish", "GlobalMaxPool", "ReduceL2"}
    if not any(n.op_type in wanted and n.domain in ("", "ai.onnx") for n in proto.graph.node):
        return proto
    from onnx import shape_inference

    try:
        ranks = {v.name: len(v.type.tensor_type.shape.dim)
                 for v in [*shape_inference.infer_shapes(proto).graph.value_info, *proto.graph.input]
                 if v.type.tensor_type.HasField("shape")}
    except Exception:  # noqa: BLE001 - without shapes a GlobalMaxPool's rank is unknown: left as it is
        ranks = {}
    model = copy_model(proto)
    opset = _default_opset(model) or CONVERT_OPSET
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value) -> str:
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    for node in model.graph.node:
        kind = node.op_type
        if node.domain not in ("", "ai.onnx") or kind not in wanted or \
                (kind == "GlobalMaxPool" and ranks.get(node.input[0]) != 4):
            nodes.append(node)
            continue
        x, y = node.input[0], node.output[0]
        tag = f"{y}__{kind.lower()}"
        if kind == "ReduceL2":  # the same axes, inputs and attributes at every opset: sqrt of the sum of squares
            inner = helper.make_node("ReduceSumSquare", list(node.input), [f"{tag}_ss"])
            inner.attribute.extend(node.attribute)
            nodes += [inner, helper.make_node("Sqrt", [f"{tag}_ss"], [y])]
        elif kind == "GlobalMaxPool":
            if opset >= 18:
                nodes.append(helper.make_node("ReduceMax", [x, const(f"{tag}_axes", np.array([2, 3], np.int64))], [y],
                                              keepdims=1))
            else:
                nodes.append(helper.make_node("ReduceMax", [x], [y], axes=[2, 3], keepdims=1))
        elif kind == "Mish":
            nodes += [helper.make_node("Softplus", [x], [f"{tag}_sp"]),
                      helper.make_node("Tanh", [f"{tag}_sp"], [f"{tag}_th"]),
                      helper.make_node("Mul", [x, f"{tag}_th"], [y])]
        else:  # Gelu: 0.5 x (1 + erf(x / sqrt 2)), or with approximate="tanh" the tanh form
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("approximate", b"none") in (b"tanh", "tanh"):
                cube = [helper.make_node("Mul", [x, x], [f"{tag}_x2"]), helper.make_node("Mul", [f"{tag}_x2", x],
                                                                                         [f"{tag}_x3"]),
                        helper.make_node("Mul", [f"{tag}_x3", const(f"{tag}_c", np.float32(0.044715))], [f"{tag}_cx3"]),
                        helper.make_node("Add", [x, f"{tag}_cx3"], [f"{tag}_in"]),
                        helper.make_node("Mul", [f"{tag}_in", const(f"{tag}_k", np.float32(np.sqrt(2 / np.pi)))],
                                         [f"{tag}_arg"]),
                        helper.make_node("Tanh", [f"{tag}_arg"], [f"{tag}_f"])]
            else:
                cube = [helper.make_node("Div", [x, const(f"{tag}_r2", np.float32(np.sqrt(2.0)))], [f"{tag}_arg"]),
                        helper.make_node("Erf", [f"{tag}_arg"], [f"{tag}_f"])]
            nodes += [*cube, helper.make_node("Add", [f"{tag}_f", const(f"{tag}_one", np.float32(1.0))], [f"{tag}_1f"]),
                      helper.make_node("Mul", [x, f"{tag}_1f"], [f"{tag}_x1f"]),
                      helper.make_node("Mul", [f"{tag}_x1f", const(f"{tag}_half", np.float32(0.5))], [y])]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def convertible(proto: onnx.ModelProto, target: int = CONVERT_OPSET) -> tuple[onnx.ModelProto, str]:
    """``proto`` as onnx2torch can read it, with a note for its error message ('' when nothing is
    known to be in the way): :func:`decomposed` and :func:`without_trailing_empty_inputs`, at ``target``
    when its opset is newer (:func:`to_opset`, else onnx's version converter; as it is when neither
    can), and with :func:`plain_reshapes`."""
    proto = without_trailing_empty_inputs(decomposed(proto))
    opset = _default_opset(proto)
    if opset is not None and opset > target:
        # The relabelling first: where it applies it is exact, while onnx 1.17's version converter turns
        # an opset-18 reduction whose axes are an initializer into one over no axes (axes=[]).
        down = to_opset(proto, target)
        if down is None:
            from onnx import version_converter

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    down = restore_reduction_axes(proto, version_converter.convert_version(proto, target))
            except Exception:  # noqa: BLE001 - no adapter for some operator: left as it is
                return proto, (f"; the graph is at opset {opset}, onnx2torch reads up to {target} and the graph "
                               f"could not be brought down to it: re-export at opset {target}")
        proto = down
    return plain_reshapes(proto), ""


def without_trailing_empty_inputs(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with the empty names that end a node's inputs dropped (a copy; ``proto`` itself when
    there are none). An optional input left out at the end may be written either way and means the same;
    torch writes ``Clip(x, min, "")`` for ``clamp_min`` (``F.normalize``) and ``Pad(x, pads, value, "")``,
    and onnx2torch takes the empty name for a tensor to look up."""
    if not any(n.input and not n.input[-1] for n in proto.graph.node):
        return proto
    model = copy_model(proto)
    for node in model.graph.node:
        names = list(node.input)
        while names and not names[-1]:
            names.pop()
        if len(names) != len(node.input):
            del node.input[:]
            node.input.extend(names)
    return model


def plain_reshapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``allowzero`` dropped from every Reshape whose shape is a constant without a 0 (torch's newer
    exporter sets it; it only changes what a 0 in the shape means, and onnx2torch reads no allowzero=1)."""
    constants = {t.name: t for t in proto.graph.initializer}
    found = False
    for node in proto.graph.node:
        if node.op_type == "Reshape" and node.domain in ("", "ai.onnx") and len(node.input) > 1:
            allow = [a for a in node.attribute if a.name == "allowzero" and a.i]
            shape = constants.get(node.input[1])
            if allow and shape is not None and np.all(numpy_helper.to_array(shape) != 0):
                found = True
    if not found:
        return proto
    model = copy_model(proto)
    for node in model.graph.node:
        shape = constants.get(node.input[1]) if node.op_type == "Reshape" and len(node.input) > 1 else None
        if shape is not None and node.domain in ("", "ai.onnx") and np.all(numpy_helper.to_array(shape) != 0):
            kept = [a for a in node.attribute if a.name != "allowzero"]
            del node.attribute[:]
            node.attribute.extend(kept)
    return model


def batch_free(proto: onnx.ModelProto, batch: int) -> onnx.ModelProto | None:
    """A copy of a graph exported for one batch size with each Reshape to a constant shape that starts
    with that size made to infer it (-1) instead, or None when there is no such Reshape. Only a guess
    that the first dimension is the batch: the caller keeps it only when the conversion then gives
    ONNX Runtime's gaze at another batch size."""
    model = copy_model(proto)
    constants = {t.name: t for t in model.graph.initializer}
    changed = False
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx") or node.input[1] not in constants:
            continue
        shape = numpy_helper.to_array(constants[node.input[1]]).astype(np.int64)
        if shape.ndim != 1 or len(shape) < 2 or shape[0] != batch or (shape == -1).any():
            continue
        name = f"{node.input[1]}__any_batch_{len(model.graph.initializer)}"
        model.graph.initializer.append(numpy_helper.from_array(np.concatenate([[-1], shape[1:]]), name))
        node.input[1] = name
        changed = True
    return model if changed else None
