"""Convert a bundle's ONNX graph back to a differentiable PyTorch module split into F and H.

Torch's exporter aliases shared initializers through Identity nodes, which onnx2torch cannot
read; they are folded into real initializers first. A graph of an opset newer than onnx2torch reads
(opset 17; torch 2.x exports at 18-20) is brought down to it first
(:func:`~securegaze.bundle.opset_down.convertible`); the result is checked against ONNX Runtime on
the original graph
(:meth:`~securegaze.bundle.runtime.Bundle.to_torch`, which also gives a graph with float16 weights
inside as its float32 copy, :mod:`securegaze.bundle.float32_copy`). The F/H split is found at the
input of the last Gemm/MatMul layer(s) feeding the outputs, or read from the manifest's declared
feature tensor (:mod:`securegaze.bundle.onnx_split`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from securegaze.bundle.export import as_tuple
from securegaze.bundle.manifest import BundleManifest
from securegaze.bundle.onnx_graph import copy_model, first_line
from securegaze.bundle.onnx_split import GraphIndex, declare_hint, feature_candidates, find_split, region
from securegaze.bundle.opset_down import convertible
from securegaze.errors import ModelFormatError
from securegaze.models.base import BinSpec, decode_bins

# onnx2torch's Slice indexes with a list, which torch 2.x warns about on every converted model that has one
# (a Slice in a user's graph is no fault of the user's): not shown.
warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing",
                        category=UserWarning)

# ----------------------------------------------------------------------------------------------
# ONNX -> PyTorch with the F/H split
# ----------------------------------------------------------------------------------------------


def _fold_constants_into_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Turn Identity-of-initializer and Constant nodes into real initializers (in a copy).

    torch's exporter de-duplicates initializers with equal values (shared weights, but also e.g. the
    all-zero biases of an untrained model) and reads the duplicates through ``Identity`` nodes.
    onnx2torch's Conv/Gemm converters look weights up among initializers only and fail with a
    KeyError on such an alias, so each alias becomes an initializer of its own.
    """
    model = copy_model(proto)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    kept = []
    for node in graph.node:
        out = node.output[0] if len(node.output) == 1 else None
        if out is None or out in graph_outputs:
            kept.append(node)
            continue
        if node.op_type == "Identity" and node.domain in ("", "ai.onnx") and node.input[0] in initializers:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(initializers[node.input[0]])
        elif (
            node.op_type == "Constant"
            and node.domain in ("", "ai.onnx")
            and len(node.attribute) == 1
            and node.attribute[0].name == "value"
        ):
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
        else:
            kept.append(node)
            continue
        tensor.name = out
        initializers[out] = tensor
        graph.initializer.append(tensor)
    del graph.node[:]
    graph.node.extend(kept)
    return model


def _value_info(index: GraphIndex, name: str) -> onnx.ValueInfoProto:
    info = index.value_info.get(name)
    if info is not None:
        return info
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)


def _submodel(
    index: GraphIndex,
    nodes: list[onnx.NodeProto],
    inputs: list[str],
    outputs: list[str],
    extra_initializers: Sequence[onnx.TensorProto] = (),
) -> onnx.ModelProto:
    """A stand-alone model of ``nodes``; each output gets its own Identity node.

    The extra Identity matters to onnx2torch: it builds the fx output from the *nodes* producing the
    outputs, so two outputs of one node (a Split) or an output that is also an input come out wrong.
    """
    tail, out_infos = [], []
    for name in outputs:
        alias = f"{name}__out"
        tail.append(helper.make_node("Identity", [name], [alias], name=f"{alias}_identity"))
        info = onnx.ValueInfoProto()
        info.CopyFrom(_value_info(index, name))
        info.name = alias
        out_infos.append(info)
    used = {n for node in nodes for n in node.input}
    initializers = [t for name, t in index.constants.items() if name in used]
    initializers.extend(extra_initializers)
    graph = helper.make_graph(
        [*nodes, *tail],
        "securegaze_part",
        [_value_info(index, n) for n in inputs],
        out_infos,
        initializer=initializers,
    )
    return helper.make_model(
        graph, opset_imports=list(index.model.opset_import), ir_version=index.model.ir_version
    )


def _canonical_head(
    index: GraphIndex, nodes: list[onnx.NodeProto], feature: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], list[str]]:
    """Rewrite the linear layers reading ``feature`` as Gemm(feature, W (K, D), b (K,), transB=1).

    onnx2torch turns exactly that form into ``nn.Linear``, so H's weight rows are live parameters
    (fine-tuning moves them) whatever the source wrote: Gemm with transB=0, alpha/beta != 1 or a
    (1, K) bias, or a MatMul (its following Add stays a separate node). Returns (nodes, new
    initializers, output names of the rewritten layers in graph order).
    """
    new_nodes: list[onnx.NodeProto] = []
    new_initializers: list[onnx.TensorProto] = []
    linear_outputs: list[str] = []
    for node in nodes:
        if index.linear_input(node) != feature:
            new_nodes.append(node)
            continue
        weight = index.constant(node.input[1]).astype(np.float32)
        out = node.output[0]
        bias = None
        if node.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            rows = weight if attrs.get("transB", 0) else weight.T
            rows = rows * np.float32(attrs.get("alpha", 1.0))
            if len(node.input) > 2 and node.input[2]:
                bias = index.constant(node.input[2]).astype(np.float32) * np.float32(attrs.get("beta", 1.0))
                try:
                    bias = np.broadcast_to(
                        bias.reshape(-1) if bias.size == rows.shape[0] else bias, (rows.shape[0],)
                    ).copy()
                except ValueError:
                    # A bias that varies along the batch is not a plain linear layer; leave it as it is.
                    new_nodes.append(node)
                    continue
        else:
            rows = weight.T
        inputs = [feature, f"{out}__head_weight"]
        new_initializers.append(numpy_helper.from_array(np.ascontiguousarray(rows), inputs[1]))
        if bias is not None:
            inputs.append(f"{out}__head_bias")
            new_initializers.append(numpy_helper.from_array(bias, inputs[2]))
        new_nodes.append(helper.make_node("Gemm", inputs, [out], name=f"{out}__head_gemm", transB=1))
        linear_outputs.append(out)
    return new_nodes, new_initializers, linear_outputs


def _onnx2torch(model: onnx.ModelProto, source: Path, part: str, note: str = "") -> nn.Module:
    from onnx2torch import convert

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert(model, attach_onnx_mapping=True)
    except Exception as exc:
        first = first_line(exc)
        raise ModelFormatError(
            f"{source}: onnx2torch cannot convert the {part} part ({type(exc).__name__}: {first}){note}"
        ) from None


def convert_onnx(
    proto: onnx.ModelProto, manifest: BundleManifest, source: Path, declared: str | None
) -> ConvertedGazeModel:
    """The graph as a :class:`ConvertedGazeModel`, split at ``declared`` or at the found feature tensor.

    Not checked against ONNX Runtime here: :meth:`securegaze.bundle.runtime.Bundle.to_torch` does that.
    """
    proto, note = convertible(proto)
    index = GraphIndex(_fold_constants_into_initializers(proto))
    if len(index.inputs) != 1:
        raise ModelFormatError(
            f"{source} has inputs {index.inputs}; conversion needs exactly one image input"
        )
    image = index.inputs[0]
    outputs = list(manifest.output.names)
    feature = declared if declared is not None else find_split(index, outputs, source)
    if feature == image or feature in outputs:
        raise ModelFormatError(
            declare_hint(f"{source}: feature tensor {feature!r} is the model's input or output", source)
        )
    rank = index.rank(feature)
    if rank is not None and rank != 2:
        raise ModelFormatError(
            declare_hint(f"{source}: feature tensor {feature!r} has rank {rank}; F must give (N, D) vectors", source)
        )

    f_nodes = [index.nodes[i] for i in region(index, [image], [feature], source, "F")]
    h_nodes = [index.nodes[i] for i in region(index, [feature], outputs, source, "the head H")]
    h_nodes, head_initializers, linear_outputs = _canonical_head(index, h_nodes, feature)
    if not linear_outputs:
        raise ModelFormatError(
            declare_hint(
                f"{source}: no Gemm/MatMul layer reads feature tensor {feature!r}, so H has no weight "
                "rows to read", source, feature_candidates(index, outputs, source)
            )
        )
    f_model = _submodel(index, f_nodes, [image], [feature])
    h_model = _submodel(index, h_nodes, [feature], outputs, head_initializers)
    features_net = _onnx2torch(f_model, source, "feature (F)", note)
    head_net = _onnx2torch(h_model, source, "head (H)", note)

    by_output = {}
    for module in head_net.modules():
        mapping = getattr(module, "onnx_mapping", None)
        if mapping is not None:
            for name in mapping.outputs:
                by_output[name] = module
    linears = [by_output.get(name) for name in linear_outputs]
    if not all(isinstance(m, nn.Linear) for m in linears):
        raise ModelFormatError(f"{source}: onnx2torch did not turn the head's linear layers into nn.Linear")
    bins = manifest.output.bins.to_binspec() if manifest.output.bins else None
    return ConvertedGazeModel(features_net, head_net, linears, manifest, feature, bins)


class ConvertedGazeModel(nn.Module):
    """A bundle's ONNX graph as PyTorch, with the :class:`GazeModel` interface (G = H o F).

    ``features(x)``: (N, 3, S, S) float32 RGB in [0, 1] -> (N, D) features (F, including any
    channel-order or value-range conversion the manifest asks for). ``head(z)``: (N, D) -> (N, 2)
    (pitch, yaw) radians (H, including the bin decoding for binned models). ``head_weight()``: rows of
    H's linear layer(s), (2, D) or (2*count, D), live ``nn.Parameter`` data.
    """

    architecture = "onnx"

    def __init__(
        self,
        features_net: nn.Module,
        head_net: nn.Module,
        head_linears: list[nn.Linear],
        manifest: BundleManifest,
        feature_tensor: str,
        bins: BinSpec | None,
    ) -> None:
        super().__init__()
        self.features_net = features_net
        self.head_net = head_net
        # Kept outside the module tree: they are already registered inside head_net.
        self._head_linears = tuple(head_linears)
        self.input_size = manifest.input.size
        self.decoding = manifest.output.decoding
        self.bins = bins or BinSpec()
        self.feature_tensor = feature_tensor
        self.feature_dim = int(head_linears[0].in_features)
        self.source_name = manifest.name
        self._identity_input = manifest.input.is_identity()
        flip, scale, offset = manifest.input.affine()
        self._bgr = flip
        # Buffers, not parameters: they move with .to(device) and are never trained.
        self.register_buffer("_input_scale", torch.from_numpy(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_input_offset", torch.from_numpy(offset).view(1, 3, 1, 1), persistent=False)
        #: The batch size F's graph was exported for, when it only runs at that size (a reshape to a
        #: constant shape, as torch's newer exporter writes without dynamic shapes): set by the
        #: conversion check (Bundle.to_torch); None runs any batch at once.
        self.fixed_batch: int | None = None
        self.adaptations: tuple[str, ...] = ()  # how the file's graph was adapted (securegaze.bundle.adapt)
        self.eval()

    def _features_fixed(self, x: torch.Tensor) -> torch.Tensor:
        """F on batches of exactly :attr:`fixed_batch`: the last one filled up with detached copies of
        its last image (so no gradient reaches the image from a copy), their features dropped."""
        step, n = self.fixed_batch, len(x)
        fill = (-n) % step
        if fill:
            x = torch.cat([x, x[-1:].detach().expand(fill, *x.shape[1:])])
        return torch.cat([self.features_net(part) for part in x.split(step)])[:n]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """F: (N, 3, S, S) RGB in [0, 1] -> (N, feature_dim)."""
        if not self._identity_input:
            if self._bgr:
                x = x.flip(1)
            x = x * self._input_scale + self._input_offset
        return self._features_fixed(x) if self.fixed_batch and len(x) != self.fixed_batch else self.features_net(x)

    def _head_outputs(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return as_tuple(self.head_net(z))

    def head_logits(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Binned models only: (N, D) -> ((N, count) pitch logits, (N, count) yaw logits)."""
        if self.decoding != "binned":
            raise TypeError("head_logits is only defined for binned models")
        pitch, yaw = self._head_outputs(z)
        return pitch, yaw

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """H: (N, feature_dim) -> (N, 2) radians."""
        if self.decoding == "direct":
            return self._head_outputs(z)[0]
        pitch, yaw = self.head_logits(z)
        return torch.stack([decode_bins(pitch, self.bins), decode_bins(yaw, self.bins)], dim=-1)

    def head_weight(self) -> torch.Tensor:
        """Rows of H's weight matrix, (K, feature_dim): 2 rows (direct) or 2*count (binned)."""
        return torch.cat([linear.weight for linear in self._head_linears], dim=0)

    def head_linears(self) -> list[nn.Linear]:
        """H's linear layer(s) that read the features (live modules inside ``head_net``)."""
        return list(self._head_linears)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def export_outputs(self, x: torch.Tensor):
        """What an exported ONNX graph returns (so a fine-tuned conversion can be bundled again)."""
        z = self.features(x)
        return self.head(z) if self.decoding == "direct" else self.head_logits(z)

    def config(self) -> dict:
        cfg = {"architecture": self.architecture, "input_size": self.input_size, "decoding": self.decoding}
        if self.decoding == "binned":
            cfg["bins"] = self.bins.to_dict()
        return cfg

