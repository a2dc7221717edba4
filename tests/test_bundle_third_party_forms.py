"""Third-party ONNX gaze models in forms a red-team review found misread or badly refused: (N, 3)
outputs that are no gaze vector, float16 weights behind float32 inputs and outputs, gaze outputs of
other shapes, and error lines whose advice has to lead somewhere.

Each model is a few nodes built with onnx.helper, so every case runs in about a second.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from securegaze.bundle import open_model
from securegaze.bundle.adapt import probe_faces
from securegaze.bundle.float32_copy import FP16_ATOL, float32_copy
from securegaze.cli import main as sg_main
from securegaze.errors import ModelFormatError

SIZE = 32
#: Rows of the gaze layer reading the centred, flattened face: small random weights, so the gaze varies
#: from face to face by a few tenths of a radian.
_W = (np.random.default_rng(0).normal(size=(2, 3 * SIZE * SIZE)) * 0.02).astype(np.float32)


def _save(path, nodes, inits, outputs, in_shape=("N", 3, SIZE, SIZE), in_type=TensorProto.FLOAT):
    graph = helper.make_graph(nodes, "gaze", [helper.make_tensor_value_info("input", in_type, list(in_shape))],
                              outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _trunk(out="gaze_py", first="input"):
    """Nodes and weights giving (N, 2) ``out`` = W (x - 0.5) flattened: a gaze that moves with the face."""
    nodes = [helper.make_node("Sub", [first, "half"], ["centred"]),
             helper.make_node("Flatten", ["centred"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "w", "b"], [out], transB=1)]
    return nodes, {"half": np.array(0.5, np.float32), "w": _W, "b": np.zeros(2, np.float32)}


def _out(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, list(dims))


def _plain(path):
    nodes, inits = _trunk("gaze")
    return _save(path, nodes, inits, [_out("gaze", ["N", 2])])


def _faces(n: int = 5) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def _reads_like_plain(tmp_path, bundle, atol=1e-5):
    """ONNX Runtime and the PyTorch conversion give the plain graph's gaze, with gradients to the image."""
    faces = _faces()
    want = open_model(_plain(tmp_path / "plain.onnx")).bundle().predict(faces)
    np.testing.assert_allclose(bundle.predict(faces), want, atol=atol)
    x = torch.from_numpy(faces.transpose(0, 3, 1, 2).astype(np.float32) / 255).requires_grad_(True)
    converted = bundle.to_torch()
    got = converted(x)
    np.testing.assert_allclose(got.detach().numpy(), want, atol=atol)
    got.sum().backward()
    assert x.grad.abs().sum() > 0
    return converted


def _one_error_line(capsys, argv) -> str:
    code = sg_main(argv)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


# ------------------------------------------------------------------------------------------------
# (N, 3) outputs
# ------------------------------------------------------------------------------------------------

def _vector_graph(path, scale=-1.0, away=False):
    """The trunk's (pitch, yaw) as a 3-D vector (x right, y down, z forward) times ``scale`` (-1: the
    project's unit gaze vector); ``away`` turns z around."""
    nodes, inits = _trunk()
    nodes += [helper.make_node("Gather", ["gaze_py", f"i{i}"], [f"a{i}"], axis=1) for i in (0, 1)] + [
        helper.make_node("Cos", ["a0"], ["cp"]), helper.make_node("Sin", ["a0"], ["sp"]),
        helper.make_node("Cos", ["a1"], ["cy"]), helper.make_node("Sin", ["a1"], ["sy"]),
        helper.make_node("Mul", ["cp", "sy"], ["x"]), helper.make_node("Mul", ["cp", "cy"], ["z"]),
        helper.make_node("Mul", ["x", "k"], ["xk"]), helper.make_node("Mul", ["sp", "k"], ["yk"]),
        helper.make_node("Mul", ["z", "kz"], ["zk"]),
        *[helper.make_node("Reshape", [t, "col"], [f"{t}_c"]) for t in ("xk", "yk", "zk")],
        helper.make_node("Concat", ["xk_c", "yk_c", "zk_c"], ["vector"], axis=1)]
    inits.update({"i0": np.array(0, np.int64), "i1": np.array(1, np.int64), "k": np.array(scale, np.float32),
                  "kz": np.array(-scale if away else scale, np.float32), "col": np.array([-1, 1], np.int64)})
    return _save(path, nodes, inits, [_out("vector", ["N", 3])])


def _pitch_yaw_sigma(path):
    """(pitch, yaw, 0.3 sigmoid(pitch)), as Gaze360-style models answer: no unit vector."""
    nodes, inits = _trunk()
    nodes += [helper.make_node("Slice", ["gaze_py", "s0", "s1", "ax"], ["pitch"]),
              helper.make_node("Sigmoid", ["pitch"], ["sig"]), helper.make_node("Mul", ["sig", "k"], ["sigma"]),
              helper.make_node("Concat", ["gaze_py", "sigma"], ["gaze"], axis=1)]
    inits.update({"s0": np.array([0], np.int64), "s1": np.array([1], np.int64), "ax": np.array([1], np.int64),
                  "k": np.array(0.3, np.float32)})
    return _save(path, nodes, inits, [_out("gaze", ["N", 3])])


def test_a_unit_gaze_vector_is_read_as_pitch_and_yaw(tmp_path):
    bundle = open_model(_vector_graph(tmp_path / "vector.onnx")).bundle()
    assert len(bundle.adaptations) == 1 and "3-D gaze vector" in bundle.adaptations[0]
    _reads_like_plain(tmp_path, bundle)


def test_an_n3_output_that_is_no_unit_vector_is_refused_in_one_line(tmp_path, capsys):
    path = _pitch_yaw_sigma(tmp_path / "pys.onnx")
    with pytest.raises(ModelFormatError) as err:
        open_model(path).bundle()
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "'gaze' has shape (N, 3)" in message
    assert "no 3-D gaze vector" in message and "median" in message and "out[:, :2]" in message
    # describe cannot make it one either, and writes nothing.
    line = _one_error_line(capsys, ["describe", str(path)])
    assert "no 3-D gaze vector" in line and not (tmp_path / "manifest.json").exists()


def test_a_vector_pointing_away_from_the_camera_is_refused(tmp_path):
    with pytest.raises(ModelFormatError, match=r"points away from the camera \(z >= 0\) on 32 of 32"):
        open_model(_vector_graph(tmp_path / "away.onnx", away=True)).bundle()


def test_a_vector_gaze_is_never_also_read_as_degrees(tmp_path, monkeypatch):
    # Let a vector that points away through (its yaw then reaches past pi / 2, which would be read as
    # degrees from a plain (N, 2) output): its angles stay radians.
    import securegaze.bundle.output_forms as forms

    monkeypatch.setattr(forms, "AWAY_SHARE", 1.0)
    bundle = open_model(_vector_graph(tmp_path / "away.onnx", away=True)).bundle()
    gaze = bundle.predict(probe_faces(SIZE))
    assert np.quantile(np.abs(gaze).max(axis=1), 0.95) > np.pi / 2
    assert len(bundle.adaptations) == 1 and "degrees" not in bundle.adaptations[0]


def test_a_manifest_cannot_declare_a_vector_in_degrees(tmp_path, capsys):
    path = _vector_graph(tmp_path / "vector.onnx")
    line = _one_error_line(capsys, ["describe", str(path), "--units", "degrees"])
    assert "3-D gaze vector" in line and "by construction" in line


# ------------------------------------------------------------------------------------------------
# Float16 inside, float32 outside
# ------------------------------------------------------------------------------------------------

def _fp16_inside(path):
    """Cast to float16 after the input, float16 weights (initializers and a Constant), Cast back to float32."""
    nodes, inits = _trunk("gaze16", first="x16")
    nodes[0] = helper.make_node("Sub", ["x16", "half16"], ["centred"])
    nodes = [helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16),
             helper.make_node("Constant", [], ["half16"], value=numpy_helper.from_array(np.array(0.5, np.float16))),
             *nodes, helper.make_node("Cast", ["gaze16"], ["gaze"], to=TensorProto.FLOAT)]
    del inits["half"]
    inits = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in inits.items()}
    return _save(path, nodes, inits, [_out("gaze", ["N", 2])])


def test_float16_weights_inside_convert_from_a_float32_copy(tmp_path):
    path = _fp16_inside(tmp_path / "fp16_inside.onnx")
    bundle = open_model(path).bundle()
    converted = _reads_like_plain(tmp_path, bundle, atol=FP16_ATOL)
    assert any("float16 inside" in note for note in converted.adaptations)
    assert open_model(path).gaze_model().head_weight().dtype == torch.float32
    wide, note = float32_copy(path, onnx.load(str(path)))
    halves = [t.name for t in wide.graph.initializer if t.data_type == TensorProto.FLOAT16]
    casts = [a.i for n in wide.graph.node if n.op_type == "Cast" for a in n.attribute]
    constants = [a.t.data_type for n in wide.graph.node if n.op_type == "Constant" for a in n.attribute]
    assert halves == [] and TensorProto.FLOAT16 not in casts + constants and "fp16_inside.onnx" in note
    assert float32_copy(path, onnx.load(str(_plain(tmp_path / "plain.onnx")))) == (None, None)


# ------------------------------------------------------------------------------------------------
# Gaze outputs of other shapes
# ------------------------------------------------------------------------------------------------

def _split_outputs(path, names=("pitch", "yaw")):
    nodes, inits = _trunk()
    nodes.append(helper.make_node("Split", ["gaze_py", "sizes"], list(names), axis=1))
    inits["sizes"] = np.array([1, 1], np.int64)
    return _save(path, nodes, inits, [_out(n, ["N", 1]) for n in names])


@pytest.mark.parametrize("form", ["n12", "n21", "flat_batch1"])
def test_a_gaze_with_an_extra_axis_or_flattened_is_read(tmp_path, form):
    nodes, inits = _trunk()
    if form == "flat_batch1":
        nodes.append(helper.make_node("Reshape", ["gaze_py", "shape"], ["gaze"]))
        inits["shape"] = np.array([-1], np.int64)
        path = _save(tmp_path / f"{form}.onnx", nodes, inits, [_out("gaze", [2])], in_shape=(1, 3, SIZE, SIZE))
    else:
        nodes.append(helper.make_node("Unsqueeze", ["gaze_py", "axis"], ["gaze"]))
        inits["axis"] = np.array([1 if form == "n12" else 2], np.int64)
        dims = ["N", 1, 2] if form == "n12" else ["N", 2, 1]
        path = _save(tmp_path / f"{form}.onnx", nodes, inits, [_out("gaze", dims)])
    bundle = open_model(path).bundle()
    assert len(bundle.adaptations) == 1 and "read as (N, 2) (pitch, yaw)" in bundle.adaptations[0]
    _reads_like_plain(tmp_path, bundle)


def test_pitch_and_yaw_outputs_are_read_together_and_described(tmp_path, capsys):
    path = _split_outputs(tmp_path / "two.onnx", ("Pitch", "yaw_out"))
    bundle = open_model(path).bundle()
    assert bundle.adaptations == ("two.onnx: its outputs 'Pitch' and 'yaw_out', each (N, 1), are read together as "
                                  "the gaze (pitch, yaw), output 'Pitch_yaw_out'",)
    _reads_like_plain(tmp_path, bundle)
    assert sg_main(["describe", str(path), "--value-range", "0,1"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["output"]["names"] == ["Pitch_yaw_out"]
    described = open_model(path)
    assert described.manifest_path is not None
    _reads_like_plain(tmp_path, described.bundle())
    # Naming one of the two is refused, saying what works.
    line = _one_error_line(capsys, ["describe", str(path), "--output", "Pitch", "--force"])
    assert "(N, 1)" in line and "leave --output out" in line


def test_outputs_nothing_can_read_do_not_send_the_user_to_describe(tmp_path, capsys):
    path = _split_outputs(tmp_path / "two.onnx", ("out0", "out1"))
    with pytest.raises(ModelFormatError) as err:
        open_model(path).bundle()
    message = str(err.value)
    assert "named pitch and yaw" in message and "re-export" in message and "--output" not in message
    line = _one_error_line(capsys, ["describe", str(path)])
    assert "re-export" in line and "--output" not in line


# ------------------------------------------------------------------------------------------------
# Error lines that lead somewhere
# ------------------------------------------------------------------------------------------------

def test_a_channels_last_input_of_free_size_is_named_as_the_file_has_it(tmp_path, capsys):
    nodes, inits = _trunk("gaze")
    nodes.insert(0, helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]))
    nodes.insert(1, helper.make_node("Resize", ["nchw", "", "", "to"], ["resized"], mode="linear"))
    nodes[2] = helper.make_node("Sub", ["resized", "half"], ["centred"])
    inits["to"] = np.array([1, 3, SIZE, SIZE], np.int64)
    path = _save(tmp_path / "nhwc.onnx", nodes, inits, [_out("gaze", [1, 2])], in_shape=(1, "H", "W", 3))
    with pytest.raises(ModelFormatError, match=r"has shape \(1, H, W, 3\): its height and width are not fixed"):
        open_model(path).bundle()
    line = _one_error_line(capsys, ["describe", str(path)])
    assert "(1, H, W, 3)" in line and "--input-size" in line


def test_a_changed_file_says_how_to_rewrite_its_manifest(tmp_path, capsys):
    path = _plain(tmp_path / "model.onnx")
    assert sg_main(["describe", str(path)]) == 0
    _vector_graph(path)  # re-exported under the same name
    with pytest.raises(ModelFormatError) as err:
        open_model(path).bundle()
    assert "does not match manifest" in str(err.value)
    assert f"securegaze describe {path} --force" in str(err.value)
    capsys.readouterr()
    assert sg_main(["describe", str(path), "--force"]) == 0
    assert "3-D gaze vector" in open_model(path).bundle().adaptations[0]


def test_a_head_that_is_no_linear_layer_names_the_tensors_to_declare(tmp_path, capsys):
    # gaze = Gemm(flat) + flat[:, :2]: the slice reaches the input with no linear layer, but "flat" cuts both.
    nodes, inits = _trunk("linear")
    nodes += [helper.make_node("Slice", ["flat", "s0", "s1", "ax"], ["direct"]),
              helper.make_node("Add", ["linear", "direct"], ["gaze"])]
    inits.update({"s0": np.array([0], np.int64), "s1": np.array([2], np.int64), "ax": np.array([1], np.int64)})
    path = _save(tmp_path / "bypass.onnx", nodes, inits, [_out("gaze", ["N", 2])])
    with pytest.raises(ModelFormatError) as err:
        open_model(path).gaze_model()
    message = str(err.value)
    assert f"securegaze describe {path} --feature-tensor NAME" in message and "in this graph: 'flat'" in message
    assert sg_main(["describe", str(path), "--feature-tensor", "flat"]) == 0
    assert open_model(path).gaze_model().feature_tensor == "flat"
    # A 1x1 convolution and a mean: no tensor can be declared, and the line says so.
    conv = [helper.make_node("Conv", ["input", "wc"], ["conv"]), helper.make_node("ReduceMean", ["conv"], ["gaze"],
                                                                                  axes=[2, 3], keepdims=0)]
    weight = np.random.default_rng(0).normal(size=(2, 3, 1, 1)).astype(np.float32)
    path = _save(tmp_path / "convhead.onnx", conv, {"wc": weight}, [_out("gaze", ["N", 2])])
    with pytest.raises(ModelFormatError) as err:
        open_model(path).gaze_model()
    message = str(err.value)
    assert "--feature-tensor" in message and "this graph has none" in message and "re-export" in message


def test_a_uint8_input_the_graph_casts_itself_is_read_as_float(tmp_path):
    # Exported for raw 8-bit camera frames, channels last: Cast to float, Transpose, / 255 inside the graph.
    nodes, inits = _trunk(first="scaled")
    nodes[:0] = [helper.make_node("Cast", ["input"], ["as_float"], to=TensorProto.FLOAT),
                 helper.make_node("Transpose", ["as_float"], ["nchw"], perm=[0, 3, 1, 2]),
                 helper.make_node("Div", ["nchw", "full"], ["scaled"])]
    inits["full"] = np.array(255.0, np.float32)
    path = _save(tmp_path / "u8.onnx", nodes, inits, [_out("gaze_py", ["N", 2])], in_shape=("N", SIZE, SIZE, 3),
                 in_type=TensorProto.UINT8)
    bundle = open_model(path).bundle()
    assert any("takes uint8 pixels (0..255), which the graph casts to float first" in n for n in bundle.adaptations)
    assert any("channels-last" in n for n in bundle.adaptations)
    _reads_like_plain(tmp_path, bundle, atol=1e-4)


def test_whole_number_input_used_otherwise_gets_advice_about_the_input_not_the_weights(tmp_path):
    # A 16-bit integer input (its range unknown) is refused, with advice about the input.
    nodes, inits = _trunk(first="as_float")
    nodes.insert(0, helper.make_node("Cast", ["input"], ["as_float"], to=TensorProto.FLOAT))
    path = _save(tmp_path / "i16.onnx", nodes, inits, [_out("gaze_py", ["N", 2])], in_type=TensorProto.INT16)
    with pytest.raises(ModelFormatError) as err:
        open_model(path).bundle()
    message = str(err.value)
    assert "is int16" in message and "float32 input" in message and "--value-range 0,255" in message
    assert "model.float()" not in message
