"""A float32 copy of a graph that computes in float16 inside while taking and giving float32.

Such graphs are common: onnxconverter-common's ``convert_float_to_float16(..., keep_io_types=True)``
writes them, and so does a half-precision export wrapped in casts (``model.half()(x.half()).float()``).
ONNX Runtime runs them as they are, but the PyTorch conversion the scan differentiates mixes float16
activations with the float32 weights it writes for the head. So before the conversion
(:meth:`securegaze.bundle.runtime.Bundle.to_torch`) such a graph is copied with every float16 turned
into float32: initializers and tensor attributes (Constant, ConstantOfShape), Cast targets, and the
declared types of values (CastLike follows its now float32 model tensor). The file is not changed; the
copy computes what the graph computes, without the float16 rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from securegaze.bundle.onnx_graph import copy_model

__all__ = ["FP16_ATOL", "float32_copy"]

#: How far (radians) the float32 copy's gaze may be from the float16 graph's in ONNX Runtime: float16
#: keeps 11 significant bits (a relative step of 1e-3), and the rounding of each layer adds up; a
#: hundredth of a radian (0.57 deg) is well past that and well under any gaze error that matters.
FP16_ATOL = 1e-2

_HALF, _FLOAT = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT


def _widened(tensor: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)


def _widen_graph(graph: onnx.GraphProto) -> None:
    """Turn the float16 parts of ``graph`` (and of its subgraphs) into float32, in place."""
    for tensor in graph.initializer:
        if tensor.data_type == _HALF:
            tensor.CopyFrom(_widened(tensor))
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t") and attr.t.data_type == _HALF:
                attr.t.CopyFrom(_widened(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == _HALF:
                attr.i = _FLOAT
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _widen_graph(sub)
    for value in [*graph.value_info, *graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == _HALF:
            value.type.tensor_type.elem_type = _FLOAT


def float32_copy(path: Path, proto: onnx.ModelProto) -> tuple[onnx.ModelProto | None, str | None]:
    """(the float32 copy of ``proto``, its note naming the file) when the graph holds float16 values,
    else (None, None). Only graphs whose inputs are float32 get here: a float16 input is refused on
    loading (:func:`securegaze.bundle.manifest_checks.check_against_manifest`)."""
    if not _holds_half(proto.graph):
        return None, None
    wide = copy_model(proto)
    _widen_graph(wide.graph)
    return wide, (f"{path.name}: its weights and activations are float16 inside (float32 input and output); "
                  "converted to PyTorch from a float32 copy of the graph, checked against ONNX Runtime on the "
                  f"graph as it is within {FP16_ATOL:g} rad (float16 rounding)")


def _holds_half(graph: onnx.GraphProto) -> bool:
    if any(t.data_type == _HALF for t in graph.initializer):
        return True
    if any(v.type.tensor_type.elem_type == _HALF for v in [*graph.value_info, *graph.input, *graph.output]):
        return True
    for node in graph.node:
        for attr in node.attribute:
            if (attr.HasField("t") and attr.t.data_type == _HALF) or (
                    node.op_type == "Cast" and attr.name == "to" and attr.i == _HALF):
                return True
            if (attr.HasField("g") and _holds_half(attr.g)) or any(_holds_half(g) for g in attr.graphs):
                return True
    return False
