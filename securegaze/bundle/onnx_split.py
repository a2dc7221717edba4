"""Where a converted graph splits into features F and head H: the tensor read by the last linear layer(s).

Used by :mod:`securegaze.bundle.onnx_to_torch`. A graph whose head is no Gemm/MatMul (a 1x1
convolution and a mean, say), or whose last linear layers read different tensors, gets one error line
naming ``securegaze describe FILE --feature-tensor NAME`` and the tensors that would work there: the
data inputs of its Gemm/MatMul layers from which the outputs follow alone, or, when there is none,
what the head needs to be.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from securegaze.bundle.manifest import MANIFEST_NAME
from securegaze.bundle.onnx_graph import real_inputs, value_dims, with_inferred_shapes
from securegaze.errors import ModelFormatError

__all__ = ["GraphIndex", "declare_hint", "feature_candidates", "find_split", "region"]


def declare_hint(what: str, source: Path | None = None, candidates: list[str] | None = None) -> str:
    """``what`` and how to declare the feature tensor: ``securegaze describe`` writes it in the manifest.
    ``candidates``: tensors that would work (None: not looked for; empty: there is none)."""
    declare = (f"securegaze describe {source or 'MODEL.onnx'} --feature-tensor NAME (it writes "
               f'"feature_split": {{"feature_tensor": NAME}} in {MANIFEST_NAME})')
    if candidates is not None and not candidates:
        return (f"{what}; a declared feature tensor ({declare}) must be (N, D) features that a Gemm/MatMul head "
                "reads and that the outputs follow from alone, and this graph has none: re-export the model with a "
                "linear last layer (a 1x1 convolution followed by a mean is one on the pooled features: "
                "GlobalAveragePool, Flatten, Linear)")
    hint = f"{what}; declare where F ends: {declare}, NAME being the (N, D) features a Gemm/MatMul head reads"
    return f"{hint}; in this graph: {', '.join(repr(c) for c in candidates[:4])}" if candidates else hint


class GraphIndex:
    """Producers and constants of a graph, for walking it by tensor name."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.nodes = list(self.graph.node)
        self.constants = {t.name: t for t in self.graph.initializer}
        self.inputs = [v.name for v in real_inputs(self.graph)]
        self.outputs = [o.name for o in self.graph.output]
        self.producer = {name: i for i, node in enumerate(self.nodes) for name in node.output if name}
        inferred = with_inferred_shapes(model).graph
        self.value_info = {v.name: v for v in [*inferred.value_info, *inferred.input, *inferred.output]}

    def constant(self, name: str) -> np.ndarray | None:
        tensor = self.constants.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def linear_input(self, node: onnx.NodeProto) -> str | None:
        """The data input of a linear layer (Gemm/MatMul with a constant 2-D weight), else None."""
        if (
            node.domain not in ("", "ai.onnx")
            or node.op_type not in ("Gemm", "MatMul")
            or len(node.input) < 2
        ):
            return None
        data, weight = node.input[0], node.input[1]
        if data in self.constants or weight not in self.constants or len(self.constants[weight].dims) != 2:
            return None
        if node.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("transA", 0):
                return None
            if len(node.input) > 2 and node.input[2] and node.input[2] not in self.constants:
                return None
        return data

    def rank(self, name: str) -> int | None:
        info = self.value_info.get(name)
        dims = None if info is None else value_dims(info)
        return None if dims is None else len(dims)



def find_split(index: GraphIndex, outputs: list[str], source: Path) -> str:
    """The tensor read by the last linear layer(s) on every path from the input to ``outputs``."""
    what = (f"{source}: a path from the input to the outputs has no Gemm/MatMul layer, so the split into "
            "features and head cannot be found automatically")
    features: list[str] = []
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in seen or name in index.constants:
            continue
        seen.add(name)
        if name not in index.producer:  # the image input (or a dangling name): no linear layer on this path
            raise ModelFormatError(declare_hint(what, source, feature_candidates(index, outputs, source)))
        node = index.nodes[index.producer[name]]
        data = index.linear_input(node)
        if data is not None:
            if data not in features:
                features.append(data)
            continue
        stack.extend(n for n in node.input if n)
    if not features:
        raise ModelFormatError(declare_hint(what, source, feature_candidates(index, outputs, source)))
    if len(features) != 1:
        raise ModelFormatError(
            declare_hint(
                f"{source}: the last linear layers read different tensors {features}, so there is "
                "no single feature vector", source, feature_candidates(index, outputs, source)
            )
        )
    return features[0]


def region(index: GraphIndex, inputs: list[str], outputs: list[str], source: Path, what: str) -> list[int]:
    """Indices (topological order) of the nodes computing ``outputs`` from ``inputs`` and constants."""
    needed: set[int] = set()
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in seen or name in inputs or name in index.constants:
            continue
        seen.add(name)
        if name not in index.producer:
            raise ModelFormatError(
                declare_hint(f"{source}: {what} also depends on {name!r}, not only on {inputs}", source)
            )
        i = index.producer[name]
        if i not in needed:
            needed.add(i)
            stack.extend(n for n in index.nodes[i].input if n)
    return sorted(needed)


def feature_candidates(index: GraphIndex, outputs: list[str], source: Path) -> list[str]:
    """Tensors that would work as the declared feature tensor, nearest the outputs first: data inputs of
    Gemm/MatMul layers, of rank 2 (or unknown), from which the outputs follow with no other input."""
    found = []
    for node in reversed(index.nodes):
        data = index.linear_input(node)
        if data is None or data in found or data in index.inputs or index.rank(data) not in (None, 2):
            continue
        try:
            region(index, [data], outputs, source, "H")
        except ModelFormatError:
            continue
        found.append(data)
    return found
