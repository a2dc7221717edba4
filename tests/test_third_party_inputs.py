"""Third-party inputs: ONNX gaze models from elsewhere and plain folders of face images.

Each model is a few nodes built with onnx.helper (no training, no export), each image a few
kilobytes, so every case runs in well under a second.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from edge_app.sources import ImageFolderSource, open_source
from securegaze.bundle import open_model
from securegaze.bundle.manifest_checks import infer_manifest
from securegaze.cli import main as sg_main
from securegaze.data.image_folder import load_image_folder, read_image
from securegaze.data.sources import load_gaze_data
from securegaze.errors import DatasetError, InputFileError, ModelFormatError

SIZE = 32


def _gaze_graph(path, in_shape=("N", 3, SIZE, SIZE), out_width=2, in_name="input", out_name="gaze",
                in_type=TensorProto.FLOAT, pre=(), extra_nodes=(), extra_inits=(), opset=17):
    """A tiny gaze model: [pre nodes] -> GlobalAveragePool -> Flatten -> Gemm (3 -> out_width)."""
    rng = np.random.default_rng(0)
    first = in_name
    nodes = list(pre)
    if nodes:
        first = nodes[-1].output[0]
    nodes += [helper.make_node("GlobalAveragePool", [first], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"]),
              *extra_nodes,
              helper.make_node("Gemm", [extra_nodes[-1].output[0] if extra_nodes else "flat", "w", "b"], [out_name],
                               transB=1)]
    inits = [numpy_helper.from_array(rng.normal(size=(out_width, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(out_width, np.float32), "b"), *extra_inits]
    graph = helper.make_graph(nodes, "gaze", [helper.make_tensor_value_info(in_name, in_type, list(in_shape))],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", out_width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _faces(n: int = 3, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------
# ONNX models
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"in_name": "x", "out_name": "y"},
    {"in_shape": (1, 3, SIZE, SIZE)},
    {"in_shape": ("batch", 3, 36, 36)},
    {"opset": 11},
], ids=["other_names", "fixed_batch_1", "size_36", "opset_11"])
def test_plain_third_party_models_load_and_predict(tmp_path, kwargs):
    path = _gaze_graph(tmp_path / "m.onnx", **kwargs)
    bundle = open_model(path).bundle()
    gaze = bundle.predict(_faces(3, bundle.input_size))
    assert gaze.shape == (3, 2) and np.isfinite(gaze).all()


@pytest.mark.parametrize("opset", [18, 19, 20, 21, 22, 23])
def test_models_of_newer_opsets_convert_to_torch(tmp_path, opset):
    # torch 2.x exports at opset 18-20; onnx2torch has no converter for the newer versions of Identity
    # (which the F/H split adds), Reshape, Cast, ...: the graph is brought down to opset 17 first, and the
    # conversion is checked against ONNX Runtime on the graph as given.
    import torch

    bundle = open_model(_gaze_graph(tmp_path / "m.onnx", opset=opset)).bundle()
    converted = bundle.to_torch()
    x = torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        np.testing.assert_allclose(converted(x).numpy(), bundle.predict(x.numpy()), atol=1e-5)


def _reduce_reshape_graph(path, axes_from_input=True, batch=None, through_one_row=False):
    """What torch's newer exporter writes for global pooling at opset 20: ReduceMean with its axes as an
    input (opset 18), then Reshape with allowzero=1 (opset 19), neither of which onnx's version
    converter can bring down to 17 nor onnx2torch reads."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
             numpy_helper.from_array(np.array([batch or -1, 3], np.int64), "shape"),
             numpy_helper.from_array(rng.normal(size=(2, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(2, np.float32), "b")]
    first = []
    axes = "axes"
    if not axes_from_input:  # axes computed from the input's shape: nothing constant to rewrite
        first = [helper.make_node("Shape", ["input"], ["dims"]),
                 helper.make_node("Slice", ["dims", "two", "four"], ["axes_run"])]
        inits += [numpy_helper.from_array(np.array([2], np.int64), "two"),
                  numpy_helper.from_array(np.array([4], np.int64), "four")]
        axes = "axes_run"
    pooled = "pooled"
    if through_one_row:  # the whole batch through one row and back: no batch dimension to free
        inits.append(numpy_helper.from_array(np.array([batch * 3], np.int64), "row"))
        first.append(helper.make_node("ReduceMean", ["input", axes], ["pooled0"], keepdims=1))
        first.append(helper.make_node("Reshape", ["pooled0", "row"], ["pooled"]))
    nodes = [*first] + ([] if through_one_row else [helper.make_node("ReduceMean", ["input", axes], [pooled],
                                                                      keepdims=1)]) + [
             helper.make_node("Reshape", [pooled, "shape"], ["flat"], allowzero=1),
             helper.make_node("Gemm", ["flat", "w", "b"], ["gaze"], transB=1)]
    graph = helper.make_graph(nodes, "gaze", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            [batch or "N", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("gaze", TensorProto.FLOAT, [batch or "N", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_a_graph_the_version_converter_cannot_bring_down_is_relabelled(tmp_path):
    import torch

    from securegaze.bundle.opset_down import to_opset

    path = _reduce_reshape_graph(tmp_path / "m.onnx")
    down = to_opset(onnx.load(str(path)), 17)
    reduce = next(n for n in down.graph.node if n.op_type == "ReduceMean")
    assert list(reduce.input) == ["input"] and [list(a.ints) for a in reduce.attribute if a.name == "axes"] == [[2, 3]]
    bundle = open_model(path).bundle()
    converted = bundle.to_torch()  # checked against ONNX Runtime on the opset-20 graph
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        np.testing.assert_allclose(converted(x).numpy(), bundle.predict(x.numpy()), atol=1e-5)
    # Axes known only at run time have no opset-17 spelling: the graph is left alone, and the line says so.
    dynamic = _reduce_reshape_graph(tmp_path / "d.onnx", axes_from_input=False)
    assert to_opset(onnx.load(str(dynamic)), 17) is None
    with pytest.raises(ModelFormatError, match=r"d.onnx: onnx2torch cannot convert .*opset 20, .*re-export at opset 17"):
        open_model(dynamic).bundle().to_torch()


@pytest.mark.parametrize("batch", [1, 4])
def test_a_graph_exported_for_one_batch_size_scans_at_any(tmp_path, batch):
    # torch's newer exporter, without dynamic shapes, writes the export's batch size into a reshape: the
    # reshape is made to infer it, and kept so because the gaze then matches ONNX Runtime's.
    import torch

    bundle = open_model(_reduce_reshape_graph(tmp_path / "m.onnx", batch=batch)).bundle()
    converted = bundle.to_torch()
    assert converted.fixed_batch is None
    x = torch.rand(7, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        np.testing.assert_allclose(converted(x).numpy(), bundle.predict(x.numpy()), atol=1e-5)
    # Where no such reshape frees the batch (here it runs through one row), F runs on batches of exactly
    # that size, filled up, and each face keeps its own gradient.
    bundle = open_model(_reduce_reshape_graph(tmp_path / "r.onnx", batch=batch, through_one_row=True)).bundle()
    converted = bundle.to_torch()
    assert converted.fixed_batch == batch
    x = torch.rand(7, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2), requires_grad=True)
    got = converted(x)
    np.testing.assert_allclose(got.detach().numpy(), bundle.predict(x.detach().numpy()), atol=1e-5)
    got[:, 0].sum().backward()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()
    # Image 6 is the one copied to fill the last batch: its gradient is its own alone.
    alone = x[6:7].detach().clone().requires_grad_(True)
    converted(alone)[:, 0].sum().backward()
    torch.testing.assert_close(x.grad[6:7], alone.grad, atol=1e-6, rtol=1e-5)
    # A fixed-batch graph that flattens runs any batch at once.
    flat = open_model(_gaze_graph(tmp_path / "f.onnx", in_shape=(batch, 3, SIZE, SIZE))).bundle().to_torch()
    assert flat.fixed_batch is None


def _one_colour_faces(n: int = 64) -> np.ndarray:
    return np.repeat(np.repeat(np.random.default_rng(4).integers(0, 256, (n, 1, 1, 3), dtype=np.uint8), SIZE, 1),
                     SIZE, 2)


def test_a_graph_that_wants_another_input_range_is_named_in_a_warning(tmp_path):
    # Fed RGB in [0, 1], a graph that expects [0, 255] sees black faces: its gaze crowds together, and
    # the scan's verdict would mean nothing. The check names the range that spreads the gaze as faces do.
    from securegaze.defense.inputs import input_convention_check

    faces = _one_colour_faces()  # what this graph reads varies from face to face
    plain = _gaze_graph(tmp_path / "plain.onnx")
    wants_255 = _gaze_graph(tmp_path / "w255.onnx", extra_inits=[numpy_helper.from_array(np.array(1 / 255, np.float32), "k")],
                            pre=[helper.make_node("Mul", ["input", "k"], ["scaled"])])
    assert input_convention_check(open_model(plain).gaze_model(), faces) is None
    record = input_convention_check(open_model(wants_255).gaze_model(), faces)
    assert record["spread_deg"] < 0.5 and record["likely"] == "values in [0, 255]"
    assert record["others_deg"]["values in [0, 255]"] > 10
    assert ("declare it in a manifest.json beside the .onnx (securegaze describe MODEL.onnx --value-range 0,255, with "
            "--force to replace a manifest already there)") in record["warning"]
    # A graph that answers in another unit than radians or degrees reads as angles past any gaze
    # (one in degrees is read as such when the file is opened: test_gaze_in_degrees_...).
    other_unit = _gaze_graph(tmp_path / "mrad.onnx", extra_inits=[numpy_helper.from_array(np.array(500.0, np.float32),
                                                                                           "d")],
                             extra_nodes=[helper.make_node("Mul", ["flat", "d"], ["scaled_up"])])
    assert open_model(other_unit).bundle().adaptations == ()
    record = input_convention_check(open_model(other_unit).gaze_model(), faces)
    assert record["plausible"] is False and "answers in another unit" in record["warning"]


def _reference_and(tmp_path, name: str, **kwargs):
    """(the plain graph's bundle, the bundle of the same weights in another form) on the same faces."""
    return open_model(_gaze_graph(tmp_path / "plain.onnx")).bundle(), open_model(_gaze_graph(tmp_path / name,
                                                                                               **kwargs)).bundle()


def _reads_like(reference, bundle, faces) -> None:
    """The adapted bundle gives the reference's gaze in ONNX Runtime and converted to PyTorch, with
    gradients back to the image."""
    want = reference.predict(faces)
    np.testing.assert_allclose(bundle.predict(faces), want, atol=1e-5)
    x = torch.from_numpy(faces.transpose(0, 3, 1, 2).astype(np.float32) / 255).requires_grad_(True)
    converted = bundle.to_torch()
    got = converted(x)
    np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-5)
    got.sum().backward()
    assert x.grad.abs().sum() > 0 and converted.adaptations == bundle.adaptations


def test_a_channels_last_input_is_read_through_a_transpose(tmp_path):
    reference, bundle = _reference_and(tmp_path, "nhwc.onnx", in_shape=("N", SIZE, SIZE, 3), pre=[
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2])])
    assert len(bundle.adaptations) == 1 and "channels-last (N, 32, 32, 3)" in bundle.adaptations[0]
    assert bundle.input_size == SIZE
    _reads_like(reference, bundle, _faces(5))


@pytest.mark.parametrize("last", [False, True], ids=["nchw", "nhwc"])
def test_a_grey_input_reads_the_faces_luma(tmp_path, last):
    # The grey graph copies its one channel three times into the plain graph: fed RGB faces it must
    # answer as the plain graph does on their luma, copied three times.
    shape = ("N", SIZE, SIZE, 1) if last else ("N", 1, SIZE, SIZE)
    pre = ([helper.make_node("Transpose", ["input"], ["grey_nchw"], perm=[0, 3, 1, 2])] if last else []) + [
        helper.make_node("Concat", ["grey_nchw" if last else "input"] * 3, ["three"], axis=1)]
    path = _gaze_graph(tmp_path / "grey.onnx", in_shape=shape, pre=pre)
    bundle = open_model(path).bundle()
    assert bundle.input_size == SIZE and "one grey channel" in bundle.adaptations[-1]
    assert len(bundle.adaptations) == (2 if last else 1)
    faces = _faces(5).astype(np.float32) / 255
    luma = faces @ np.array([0.299, 0.587, 0.114], np.float32)
    want = open_model(_gaze_graph(tmp_path / "plain.onnx")).bundle().predict(np.repeat(luma[:, None], 3, 1))
    x = np.ascontiguousarray(faces.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(bundle.predict(x), want, atol=1e-5)
    converted = bundle.to_torch()  # checked against ONNX Runtime, with gradients back to the RGB image
    with torch.no_grad():
        np.testing.assert_allclose(converted(torch.from_numpy(x)).numpy(), want, atol=1e-5)


def test_a_gaze_vector_output_is_read_as_pitch_and_yaw(tmp_path):
    # The plain graph's (pitch, yaw) turned into a vector of length 3 (x right, y down, z forward).
    p, y = "gaze_py", "v"
    to_vector = [helper.make_node("Gather", [p, f"i{i}"], [f"a{i}"], axis=1) for i in (0, 1)] + [
        helper.make_node("Cos", ["a0"], ["cp"]), helper.make_node("Sin", ["a0"], ["sp"]),
        helper.make_node("Cos", ["a1"], ["cy"]), helper.make_node("Sin", ["a1"], ["sy"]),
        helper.make_node("Mul", ["cp", "sy"], ["cpsy"]), helper.make_node("Mul", ["cp", "cy"], ["cpcy"]),
        *[helper.make_node("Mul", [t, "k"], [f"{t}_k"]) for t in ("cpsy", "sp", "cpcy")],
        *[helper.make_node("Reshape", [f"{t}_k", "col"], [f"{t}_c"]) for t in ("cpsy", "sp", "cpcy")],
        helper.make_node("Concat", ["cpsy_c", "sp_c", "cpcy_c"], [y], axis=1)]
    path = _gaze_graph(tmp_path / "vector.onnx", out_name=p)
    model = onnx.load(str(path))
    model.graph.node.extend(to_vector)
    model.graph.initializer.extend([numpy_helper.from_array(np.array(i, np.int64), f"i{i}") for i in (0, 1)] + [
        numpy_helper.from_array(np.array(-3.0, np.float32), "k"), numpy_helper.from_array(np.array([-1, 1]), "col")])
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, ["N", 3]))
    onnx.save(model, str(path))
    reference = open_model(_gaze_graph(tmp_path / "plain.onnx")).bundle()
    bundle = open_model(path).bundle()
    assert len(bundle.adaptations) == 1 and "3-D gaze vector" in bundle.adaptations[0]
    faces = _faces(5)
    assert np.abs(reference.predict(faces)).max() < np.pi / 2  # within the half-angle form's reach
    _reads_like(reference, bundle, faces)


def test_of_several_outputs_the_one_gaze_shaped_is_read(tmp_path):
    path = _gaze_graph(tmp_path / "two.onnx")
    model = onnx.load(str(path))
    model.graph.output.append(helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["N", 3]))
    onnx.save(model, str(path))
    reference = open_model(_gaze_graph(tmp_path / "plain.onnx")).bundle()
    bundle = open_model(path).bundle()
    assert bundle.adaptations == ("two.onnx: of its 2 outputs the one of shape (N, 2), 'gaze', is read as the gaze "
                                  "(left unread: 'flat')",)
    _reads_like(reference, bundle, _faces(5))


def test_gaze_in_degrees_is_read_as_such(tmp_path):
    # A bare file: its answers on the probe's synthetic faces reach past pi / 2 and stay under 90.
    degrees = [numpy_helper.from_array(np.array(180 / np.pi, np.float32), "d")]
    reference, bundle = _reference_and(tmp_path, "deg.onnx", out_name="raw", extra_nodes=[], extra_inits=degrees)
    model = onnx.load(str(tmp_path / "deg.onnx"))
    model.graph.node.append(helper.make_node("Mul", ["raw", "d"], ["gaze"]))
    model.graph.output[0].name = "gaze"
    onnx.save(model, str(tmp_path / "deg.onnx"))
    bundle = open_model(tmp_path / "deg.onnx").bundle()
    assert len(bundle.adaptations) == 1 and "read as degrees" in bundle.adaptations[0]
    _reads_like(reference, bundle, _faces(5))
    # Declared in a manifest: (yaw, pitch) order in degrees, without the probe.
    swapped = onnx.load(str(tmp_path / "deg.onnx"))
    swapped.graph.initializer.append(numpy_helper.from_array(np.array([1, 0], np.int64), "swap"))
    swapped.graph.node[-1].output[0] = "gaze_pitch_yaw"
    swapped.graph.node.append(helper.make_node("Gather", ["gaze_pitch_yaw", "swap"], ["gaze"], axis=1))
    folder = tmp_path / "declared"
    folder.mkdir()
    onnx.save(swapped, str(folder / "model.onnx"))
    manifest = json.loads(infer_manifest(folder / "model.onnx", onnx.load(str(folder / "model.onnx"))).to_json())
    manifest["output"].update(units="degrees", order=["yaw", "pitch"])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    declared = open_model(folder).bundle()
    assert declared.adaptations == ("model.onnx: its manifest declares the gaze in (yaw, pitch) order and in degrees; "
                                    "read as (pitch, yaw) radians",)
    _reads_like(reference, declared, _faces(5))


def _wants_255(path, gain: float = 1.0, centre: float = 0.0):
    """A graph that divides its input by 255 (and takes ``centre`` from its features, then multiplies
    them by ``gain``)."""
    return _gaze_graph(path, extra_inits=[numpy_helper.from_array(np.array(1 / 255, np.float32), "k"),
                                          numpy_helper.from_array(np.array(centre, np.float32), "centre"),
                                          numpy_helper.from_array(np.array(gain, np.float32), "gain")],
                       pre=[helper.make_node("Mul", ["input", "k"], ["scaled"])],
                       extra_nodes=[helper.make_node("Sub", ["flat", "centre"], ["centred"]),
                                    helper.make_node("Mul", ["centred", "gain"], ["amplified"])])


def test_describe_writes_the_manifest_every_command_then_reads(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    path = _wants_255(tmp_path / "m" / "w255.onnx")
    assert sg_main(["describe", str(path)]) == 0  # nothing declared: [0, 1], and the faces hardly move it
    out = " ".join(capsys.readouterr().out.split())
    assert "manifest written" in out and "warning: the gaze hardly moves" in out and "values in [0, 1]" in out
    assert sg_main(["describe", str(path), "--value-range", "0,255"]) == 2
    assert "already describes w255.onnx; pass --force" in capsys.readouterr().err
    assert sg_main(["describe", str(path), "--value-range", "0,255", "--force"]) == 0
    assert "values in [0, 255]" in " ".join(capsys.readouterr().out.split())
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["onnx_file"] == "w255.onnx" and manifest["input"]["value_range"] == [0.0, 255.0]
    assert "declared: value range (0.0, 255.0)" in manifest["provenance"]["notes"]
    # Read the declared way, it answers as the same graph without the division does.
    faces = _faces(5)
    want = open_model(_gaze_graph(tmp_path / "plain.onnx")).bundle().predict(faces)
    np.testing.assert_allclose(open_model(path).bundle().predict(faces), want, atol=1e-4)
    converted = open_model(path).gaze_model()
    with torch.no_grad():
        got = converted(torch.from_numpy(faces.transpose(0, 3, 1, 2) / 255).float())
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4)


def test_describe_names_the_pixel_range_that_makes_the_gaze_move(tmp_path, capsys):
    # Fed [0, 1] this graph's answers on the probe's faces barely move (0.08 deg); fed [0, 255] they
    # spread 20 deg within plausible angles: describe says which options to run it with.
    path = _wants_255(tmp_path / "w255.onnx", gain=10.0, centre=0.45)
    assert sg_main(["describe", str(path)]) == 0
    out = "".join(capsys.readouterr().out.split())  # the console wraps long paths anywhere
    assert "hardlymovesoverfacesthatlookaround,andspreads" in out
    assert "".join(f"deg with --value-range 0,255: if the model expects that, describe it so: securegaze describe "
                   f"{path} --value-range 0,255 --force".split()) in out
    assert sg_main(["describe", str(path), "--value-range", "0,255", "--force"]) == 0
    assert "hardly moves" not in capsys.readouterr().out


def test_describe_declares_what_a_graph_cannot_say(tmp_path, capsys):
    path = _gaze_graph(tmp_path / "dyn.onnx", in_shape=("N", 3, "H", "W"))
    assert sg_main(["describe", str(path), "--input-size", "40", "--units", "degrees", "--order", "yaw,pitch"]) == 0
    bundle = open_model(path).bundle()
    assert bundle.input_size == 40 and bundle.adaptations == (
        "dyn.onnx: its manifest declares the gaze in (yaw, pitch) order and in degrees; read as (pitch, yaw) radians",)
    (tmp_path / "other").mkdir()
    raw = open_model(_gaze_graph(tmp_path / "other" / "raw.onnx", in_shape=("N", 3, 40, 40))).bundle()
    raw = raw.predict(_faces(3, 40))
    np.testing.assert_allclose(bundle.predict(_faces(3, 40)), np.deg2rad(raw[:, ::-1]), atol=1e-6)
    capsys.readouterr()


@pytest.mark.parametrize("argv,words", [
    (["--input-size", "32", "--force"], None),  # the graph's own size: fine
    (["--input-size", "48", "--force"], ["reads 32 px", "--input-size 48"]),
    (["--value-range", "1,0", "--force"], ["value_range", "high > low"]),
    (["--std", "1,0,1", "--force"], ["std", "positive"]),
    (["--units", "grads", "--force"], ["--units", "radians or degrees"]),
    (["--order", "pitch", "--force"], ["--order", "pitch/yaw"]),
    (["--bins", "90,-180,4", "--force"], ["--bins and --outputs go together"]),
    (["--bins", "90,-180,4", "--outputs", "a,b", "--force"], ["outputs", "'a'"]),
    (["--output", "nope", "--force"], ["outputs", "'nope'"]),
    (["--channel-order", "RBG", "--force"], ["--channel-order", "RGB or BGR"]),
], ids=["own_size", "other_size", "range_backwards", "zero_std", "unit", "order", "bins_alone", "bins_unknown_outputs",
        "unknown_output", "channel_order"])
def test_describe_refuses_what_does_not_fit_in_one_line(tmp_path, capsys, argv, words):
    path = _gaze_graph(tmp_path / "m.onnx")
    assert sg_main(["describe", str(path)]) == 0
    before = (tmp_path / "manifest.json").read_bytes()
    capsys.readouterr()
    code = sg_main(["describe", str(path), *argv])
    err = capsys.readouterr().err
    if words is None:
        assert code == 0, err
        return
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert all(w in lines[0] for w in words), lines[0]
    assert (tmp_path / "manifest.json").read_bytes() == before  # nothing written


def test_describe_leaves_another_files_manifest_alone(tmp_path, capsys):
    first, second = _gaze_graph(tmp_path / "a.onnx"), _gaze_graph(tmp_path / "b.onnx")
    assert sg_main(["describe", str(first)]) == 0
    before = (tmp_path / "manifest.json").read_bytes()
    assert sg_main(["describe", str(second), "--force"]) == 2
    assert "already describes 'a.onnx', not b.onnx: put b.onnx in a folder of its own" in capsys.readouterr().err
    assert (tmp_path / "manifest.json").read_bytes() == before


def test_the_start_up_integrity_check_names_the_input_range_too(tmp_path):
    from edge_app.integrity import IntegrityChecker, IntegritySettings

    (tmp_path / "model").mkdir()
    path = _wants_255(tmp_path / "model" / "w255.onnx")
    # What this toy graph reads varies only with a face's colour: faces of one colour each (a folder of
    # them, as a user's clean set) spread its gaze as a model's would, fed [0, 255].
    (tmp_path / "faces").mkdir()
    for i, face in enumerate(_one_colour_faces()):
        Image.fromarray(face).save(tmp_path / "faces" / f"{i:02d}.png")
    quick = {"steps": 20, "eval_every": 10, "eval_samples": 64, "sensitivity_samples": 32, "probe": False}
    checker = IntegrityChecker(IntegritySettings(audit_db=tmp_path / "audit.sqlite3", clean_samples=64,
                                                 clean=str(tmp_path / "faces"), scan_settings=quick))
    result = checker.check(path)
    assert result.source == "scan"
    assert any(note.startswith("scan warning: ") and "with values in [0, 255]" in note for note in result.notes)
    assert result.record.report["details"]["input_check"]["likely"] == "values in [0, 255]"
    # A clean verdict reached on faces the model may read the wrong way says so in its own line.
    assert result.verdict == "backdoored" or result.reason.endswith(
        "with values in [0, 255]: it wants its input that way (declare it with securegaze describe, then start "
        "again), so the verdict may mean nothing")
    # Described, the same ONNX is another question: its record does not answer it.
    assert sg_main(["describe", str(path), "--value-range", "0,255"]) == 0
    again = checker.check(path)
    assert again.source == "scan" and "model_reading (unset) -> {'input': {'channel_order': 'RGB'" in again.reason
    assert again.record.settings["model_reading"]["input"]["value_range"] == [0.0, 255.0]
    assert checker.check(path).source == "database"


def test_a_newer_opset_that_cannot_be_brought_down_names_the_way_out(tmp_path):
    # GroupNormalization exists from opset 18 only and is not spelt out: the graph stays as it is and
    # the one error line says what to do.
    norm = helper.make_node("GroupNormalization", ["input", "gamma", "beta"], ["g"], num_groups=1)
    path = _gaze_graph(tmp_path / "m.onnx", opset=18, pre=[norm], extra_inits=[
        numpy_helper.from_array(np.ones(1, np.float32), "gamma"), numpy_helper.from_array(np.zeros(1, np.float32), "beta")])
    with pytest.raises(ModelFormatError, match=r"m.onnx: onnx2torch cannot convert the feature \(F\) part .*"
                       r"GroupNormalization.*opset 18, onnx2torch reads up to 17 and the graph could not be brought "
                       r"down to it: re-export at opset 17"):
        open_model(path).bundle().to_torch()


def _converts_as_onnx_runtime_runs(path) -> None:
    """The file converts to PyTorch (``to_torch`` checks it against ONNX Runtime on the graph as given,
    within 1e-4 rad, with gradients to the image) and answers as ONNX Runtime does on faces too."""
    bundle = open_model(path).bundle()
    converted = bundle.to_torch()
    faces = _faces(4)
    with torch.no_grad():
        got = converted(torch.from_numpy(faces.transpose(0, 3, 1, 2) / 255).float()).numpy()
    np.testing.assert_allclose(got, bundle.predict(faces), atol=1e-5)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
def test_an_opset_18_reduction_over_initializer_axes_keeps_its_axes(tmp_path, op):
    # onnx 1.17's version converter brings this node down to 17 with axes=[] (a reduction over nothing);
    # the relabelling, tried first, writes the initializer's axes back as the attribute.
    reduce = helper.make_node(op, ["input", "spatial"], ["pooled_first"], keepdims=1)
    path = _gaze_graph(tmp_path / "m.onnx", opset=18, pre=[reduce],
                       extra_inits=[numpy_helper.from_array(np.array([2, 3], np.int64), "spatial")])
    _converts_as_onnx_runtime_runs(path)


@pytest.mark.parametrize("opset", [18, 19, 20])
def test_reduction_axes_in_a_constant_node_and_empty_trailing_inputs_convert(tmp_path, opset):
    # torch's legacy exporter at opset 18-20 writes x.mean((2, 3)) as ReduceMean with its axes in a
    # Constant node, and clamp_min (F.normalize) as Clip(x, min, ""): neither converted before.
    nodes = [helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array([1], np.int64))),
             helper.make_node("ReduceMean", ["input", "axes"], ["channel_mean"], keepdims=1),
             helper.make_node("Constant", [], ["low"], value=numpy_helper.from_array(np.array(0.2, np.float32))),
             helper.make_node("Clip", ["channel_mean", "low", ""], ["clipped"]),
             helper.make_node("Mul", ["input", "clipped"], ["weighted"])]
    path = _gaze_graph(tmp_path / "m.onnx", opset=opset, pre=nodes)
    _converts_as_onnx_runtime_runs(path)


def test_new_attributes_at_their_old_meaning_and_reduction_axes_survive_the_way_down(tmp_path):
    # torch's newer exporter writes Resize's opset-18 attributes out at their defaults, and IsNaN at
    # opset 20: both are kept at 17 (the attributes dropped).
    resize = helper.make_node("Resize", ["input", "", "scales"], ["half"], mode="linear", antialias=0,
                              keep_aspect_ratio_policy="stretch")
    nan = [helper.make_node("IsNaN", ["half"], ["bad"]), helper.make_node("Where", ["bad", "zero", "half"], ["clean"])]
    path = _gaze_graph(tmp_path / "m.onnx", opset=20, pre=[resize, *nan], extra_inits=[
        numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], np.float32), "scales"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    _converts_as_onnx_runtime_runs(path)
    # Where onnx's version converter runs instead, the axes it drops are written back.
    from onnx import version_converter

    from securegaze.bundle.opset_down import restore_reduction_axes

    reduce = helper.make_node("ReduceMean", ["input", "spatial"], ["pooled_first"], keepdims=1)
    graph = onnx.load(str(_gaze_graph(tmp_path / "r.onnx", opset=18, pre=[reduce], extra_inits=[
        numpy_helper.from_array(np.array([2, 3], np.int64), "spatial")])))
    lowered = version_converter.convert_version(graph, 17)
    axes = [helper.get_attribute_value(a) for a in lowered.graph.node[0].attribute if a.name == "axes"]
    assert axes in ([], [[]])  # onnx 1.17: a reduction over nothing (if this changes, the mend is moot)
    mended = restore_reduction_axes(graph, lowered)
    assert [helper.get_attribute_value(a) for a in mended.graph.node[0].attribute if a.name == "axes"] == [[2, 3]]


@pytest.mark.parametrize("op,opset,attrs", [
    ("Gelu", 20, {}), ("Gelu", 20, {"approximate": "tanh"}), ("Mish", 18, {}), ("GlobalMaxPool", 17, {}),
    ("GlobalMaxPool", 18, {}), ("ReduceL2", 17, {"axes": [1], "keepdims": 1})],
    ids=["gelu", "gelu_tanh", "mish", "global_max_pool", "global_max_pool_18", "reduce_l2"])
def test_operators_onnx2torch_lacks_are_spelt_out(tmp_path, op, opset, attrs):
    # Each is written in older operators for the conversion, which is checked against ONNX Runtime on
    # the graph as given (to_torch's verification: within 1e-4 rad, gradients to the image).
    pre = [helper.make_node("Sub", ["input", "half"], ["centred"]), helper.make_node(op, ["centred"], ["o"], **attrs)]
    if op == "ReduceL2":  # F.normalize as torch writes it: x / max(||x||, eps) over the channels
        pre += [helper.make_node("Div", ["centred", "o"], ["normalised"])]
    path = _gaze_graph(tmp_path / "m.onnx", opset=opset, pre=pre,
                       extra_inits=[numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    _converts_as_onnx_runtime_runs(path)


@pytest.mark.parametrize("kwargs,words", [
    ({"in_shape": ("N", 3, 36, 60)}, ["not square", "36x60"]),
    ({"in_shape": ("N", 4, SIZE, SIZE)}, ["4 channel(s)", "grey (N, 1, S, S)"]),
    ({"in_shape": ("N", 3, "H", "W")}, ["not fixed", "securegaze describe", "--input-size"]),
    ({"in_type": TensorProto.FLOAT16,
      "pre": [helper.make_node("Cast", ["input"], ["as_f32"], to=TensorProto.FLOAT)]}, ["float16", "float32"]),
    ({"out_width": 4}, ["(N, 4)", "one (N, 2) (pitch, yaw) radians output", "manifest"]),
], ids=["non_square", "four_channels", "dynamic_hw", "float16_input", "four_outputs_wide"])
def test_unreadable_model_shapes_say_why_in_one_line(tmp_path, kwargs, words):
    path = _gaze_graph(tmp_path / "m.onnx", **kwargs)
    with pytest.raises(ModelFormatError) as err:
        open_model(path).bundle()
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert all(w in message for w in words), message


def test_a_model_exported_in_training_mode_is_refused(tmp_path):
    bn = [numpy_helper.from_array(np.full(3, v, np.float32), n)
          for n, v in (("g", 1.0), ("beta", 0.0), ("mean", 0.0), ("var", 1.0))]
    norm = helper.make_node("BatchNormalization", ["input", "g", "beta", "mean", "var"], ["normed", "m_out", "v_out"],
                            training_mode=1)
    path = _gaze_graph(tmp_path / "bn.onnx", pre=[norm], extra_inits=bn)
    with pytest.raises(ModelFormatError, match=r"training mode: BatchNormalization .*model\.eval\(\)"):
        open_model(path).bundle()
    flags = [numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
             numpy_helper.from_array(np.array(True), "train")]
    drop = helper.make_node("Dropout", ["flat", "ratio", "train"], ["dropped"])
    path = _gaze_graph(tmp_path / "drop.onnx", extra_nodes=[drop], extra_inits=flags)
    with pytest.raises(ModelFormatError, match=r"training mode: Dropout .*\(drops activations at random\)"):
        open_model(path).bundle()


def test_a_model_with_external_weights_is_read_with_them_and_hashed_with_them(tmp_path):
    # torch 2.x's exporter writes NAME.onnx.data beside the graph by default: the model runs, converts
    # and is known by a sha256 that covers the weights, so no weight changes under the same audit key.
    import torch

    one = _gaze_graph(tmp_path / "one.onnx")
    split = tmp_path / "split" / "m.onnx"
    split.parent.mkdir()
    onnx.save_model(onnx.load(str(one)), str(split), save_as_external_data=True, location="m.onnx.data",
                    size_threshold=0)
    data = split.parent / "m.onnx.data"
    assert data.is_file()
    faces = _faces(3)
    bundle = open_model(split).bundle()
    np.testing.assert_allclose(bundle.predict(faces), open_model(one).bundle().predict(faces), atol=1e-6)
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    converted = bundle.to_torch()  # checks its own input gradients: outside no_grad
    with torch.no_grad():
        np.testing.assert_allclose(converted(x).numpy(), bundle.predict(x.numpy()), atol=1e-5)
    key = open_model(split).sha256()
    assert key == bundle.sha256 and key != open_model(one).sha256()
    weights = bytearray(data.read_bytes())
    weights[0] ^= 1
    data.write_bytes(bytes(weights))
    assert open_model(split).sha256() != key
    data.unlink()  # one line naming the missing file, not a read error
    with pytest.raises(InputFileError, match=r"m\.onnx keeps its weights in the external data file 'm\.onnx\.data', "
                                             r"which is not in .*copy it beside"):
        open_model(split).bundle()


def test_external_weights_outside_the_models_folder_are_not_read(tmp_path):
    (tmp_path / "inner").mkdir()
    path = _gaze_graph(tmp_path / "inner" / "m.onnx")
    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    model = onnx.load(str(path), load_external_data=False)
    (tmp_path / "inner" / "w.bin").rename(tmp_path / "w.bin")
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../w.bin"
    onnx.save(model, str(path))
    with pytest.raises(ModelFormatError, match=r"external data file '\.\./w\.bin', outside the model's folder"):
        open_model(path).bundle()
    with pytest.raises(ModelFormatError, match="outside the model's folder"):
        open_model(path).sha256()


def test_scan_refuses_a_bad_third_party_model_in_one_line(tmp_path, capsys):
    path = _gaze_graph(tmp_path / "rgba.onnx", in_shape=("N", 4, SIZE, SIZE))
    code = sg_main(["scan", str(path), "--samples", "8", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err
    assert lines[-1].startswith("error:") and "4 channel(s)" in lines[-1]


# ------------------------------------------------------------------------------------------------
# Plain image folders (securegaze scan --clean)
# ------------------------------------------------------------------------------------------------

def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    grey = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    Image.fromarray(grey).save(tmp_path / "g8.png")
    cv2.imwrite(str(tmp_path / "g16.png"), grey.astype(np.uint16) * 257)
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")  # how Pillow opens it
    eight, sixteen = read_image(tmp_path / "g8.png"), read_image(tmp_path / "g16.png")
    assert sixteen.shape == (64, 64, 3) and np.abs(sixteen.astype(int) - eight).max() <= 1


def test_a_folder_of_other_image_formats_names_them(tmp_path):
    for i in range(3):
        Image.fromarray(_faces(1, 40)[0]).save(tmp_path / f"f{i}.bmp")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"no PNG/JPEG images found .*only 4 other files \(3 \.bmp, 1 \.txt\)"):
        load_image_folder(tmp_path, SIZE, minimum=1)
    Image.fromarray(_faces(1, 40)[0]).save(tmp_path / "f.png")
    data = load_image_folder(tmp_path, SIZE, minimum=1)
    assert len(data.images) == 1 and data.note.endswith("; 4 other files (3 .bmp, 1 .txt) skipped")


def test_a_single_image_as_the_clean_set_says_a_folder_is_needed(tmp_path):
    Image.fromarray(_faces(1, 40)[0]).save(tmp_path / "face.JPG")
    with pytest.raises(DatasetError, match="face.JPG: a single image; a clean set is a folder"):
        load_gaze_data(str(tmp_path / "face.JPG"), SIZE, 8, need_labels=None)
    with pytest.raises(DatasetError, match="no such file or folder; expected 'synthetic', a folder of face images"):
        load_gaze_data(str(tmp_path / "absent"), SIZE, 8, need_labels=None)


# ------------------------------------------------------------------------------------------------
# Image folders as an edge-app source
# ------------------------------------------------------------------------------------------------

def test_edge_folder_source_skips_hidden_files_and_checks_headers_first(tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), _faces(1, 40)[0])
    (tmp_path / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    source = open_source(str(tmp_path))
    assert isinstance(source, ImageFolderSource) and [p.name for p in source.files] == ["0.png", "1.png"]
    (tmp_path / "2.jpg").write_text("not an image")
    with pytest.raises(InputFileError, match=r"2\.jpg: not a readable image .*remove it from"):
        open_source(str(tmp_path))


@pytest.mark.parametrize("enlarge", [True, False], ids=["enlarged", "as_given"])
def test_small_face_crops_in_a_folder_are_enlarged_so_faces_are_found(tmp_path, monkeypatch, enlarge):
    # 40-px face crops: MediaPipe finds no face in them as they are; enlarged four times it does.
    from edge_app.config import EdgeConfig
    from edge_app.engines import OnnxRuntimeEngine
    from edge_app.pipeline import Pipeline
    from edge_app.zones import load_zone_map
    from securegaze.data import face_share
    from securegaze.data.synthetic import render_dataset

    for i, face in enumerate(render_dataset(6, 160, seed=11).images):
        Image.fromarray(face).resize((40, 40), Image.BICUBIC).save(tmp_path / f"face{i}.png")
    if not enlarge:
        monkeypatch.setattr(face_share, "ENLARGE_BELOW", 0)
    source = ImageFolderSource(tmp_path)
    pipeline = Pipeline(EdgeConfig(), OnnxRuntimeEngine("models/default", providers=["cpu"]), load_zone_map(),
                        static_images=True)
    found, shapes = 0, set()
    try:
        while (frame := source.read()) is not None:
            shapes.add(frame.image.shape)
            found += pipeline.process(frame).gaze is not None
    finally:
        pipeline.close()
    if enlarge:
        assert shapes == {(160, 160, 3)} and found >= 5, (shapes, found)
    else:
        assert shapes == {(40, 40, 3)} and found <= 1, (shapes, found)


def test_edge_folder_source_points_to_subfolders_with_images(tmp_path):
    (tmp_path / "person0" / "day1").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "person0" / "day1" / "a.png"), _faces(1, 40)[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="subfolders are not read, and person0 hold images: pass one of them"):
        open_source(str(tmp_path))


def _degrees_graph(path):
    """The plain graph's answers times 180 / pi: a gaze in degrees (the probe's faces reach 2-90)."""
    degrees = [numpy_helper.from_array(np.array(180 / np.pi, np.float32), "d")]
    _gaze_graph(path, out_name="raw", extra_inits=degrees)
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("Mul", ["raw", "d"], ["gaze"]))
    model.graph.output[0].name = "gaze"
    onnx.save(model, str(path))
    return path


def test_describe_declares_degrees_found_in_the_answers_unless_told_radians(tmp_path, capsys):
    path = _degrees_graph(tmp_path / "deg.onnx")
    assert sg_main(["describe", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["output"]["units"] == "degrees"
    assert manifest["provenance"]["notes"].endswith("declared: nothing; units degrees found from its answers")
    assert "plausible in degrees; declared as degrees (--units radians keeps radians)" in out
    assert "reaches past 90" not in out
    np.testing.assert_allclose(open_model(path).bundle().predict(_faces(5)),
                               open_model(_gaze_graph(tmp_path / "plain.onnx")).bundle().predict(_faces(5)), atol=1e-5)
    # Told radians, it writes radians and says the answers do not fit.
    assert sg_main(["describe", str(path), "--units", "radians", "--force"]) == 0
    assert "reaches past 90 deg read as radians" in " ".join(capsys.readouterr().out.split())
    assert json.loads((tmp_path / "manifest.json").read_text())["output"]["units"] == "radians"


def test_scan_refuses_a_gaze_past_any_angle_before_it_starts(tmp_path, capsys):
    # A manifest that says radians over a graph in degrees: every figure of a scan would mean nothing.
    path = _degrees_graph(tmp_path / "deg.onnx")
    assert sg_main(["describe", str(path), "--units", "radians"]) == 0
    capsys.readouterr()
    out = tmp_path / "scan"
    code = sg_main(["scan", str(path), "--samples", "32", "--out", str(out)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"error: {path}: the model's gaze reaches past 90 deg") and "--units degrees" in lines[0]
    assert "a scan of it would mean nothing" in lines[0] and not (out / "report.json").exists()


SMOKE = ["--set", "steps=4", "--set", "eval_every=2", "--set", "batch_size=8", "--set", "sensitivity_samples=16",
         "--set", "eval_samples=16", "--set", "probe_steps=2", "--set", "probe_refine_steps=1"]


def test_scan_keeps_another_models_report_and_replaces_its_own(tmp_path, capsys):
    import torch

    path = _wants_255(tmp_path / "w255.onnx")
    out = tmp_path / "scan"
    out.mkdir()
    other = json.dumps({"model_sha256": "ab" * 32, "verdict": "clean"})
    (out / "report.json").write_text(other)
    code = sg_main(["scan", str(path), "--samples", "32", "--out", str(out), *SMOKE])
    err = capsys.readouterr().err
    assert code == 2 and "holds the scan of another model (sha256 abababababababab...)" in " ".join(err.split())
    assert (out / "report.json").read_text() == other
    # The same model's earlier scan is replaced; --threads is used for the scan and given back after.
    (out / "report.json").write_text(json.dumps({"model_sha256": open_model(path).sha256()}))
    threads = torch.get_num_threads()
    code = sg_main(["scan", str(path), "--samples", "32", "--out", str(out), "--threads", "1", *SMOKE])
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert code in (0, 10) and report["details"]["torch_threads"] == 1 and report["verdict"] in ("clean", "backdoored")
    assert torch.get_num_threads() == threads


def test_a_gaze_that_hardly_moves_under_any_input_says_the_verdict_means_nothing(tmp_path):
    from securegaze.defense.inputs import input_convention_check

    # One face, or a model that follows none: under 2 deg whichever way the pixels are read.
    tiny = [numpy_helper.from_array(np.array(1e-5, np.float32), "tiny")]
    path = _gaze_graph(tmp_path / "still.onnx", extra_inits=tiny, extra_nodes=[helper.make_node("Mul", ["flat", "tiny"],
                                                                                                ["small"])])
    record = input_convention_check(open_model(path).gaze_model(), _faces(16))
    assert record["spread_deg"] < 2 and "likely" not in record
    assert "one face, or faces that all look one way" in record["warning"]
    assert "this verdict means nothing" in record["warning"]


@pytest.mark.parametrize("gain,words", [(1.0, None), (1000.0, "reaches past 90 deg"), (float("nan"), "not a finite")],
                         ids=["radians", "degrees_read_as_radians", "nan"])
def test_a_gaze_that_is_no_gaze_is_refused_before_a_scan(gain, words):
    from securegaze.defense.inputs import check_gaze_plausible

    class Gaze(torch.nn.Module):
        input_size = SIZE

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x.mean((2, 3))[:, :2] * self.w * gain

    faces = torch.from_numpy(_faces(40).transpose(0, 3, 1, 2) / 255).float()
    if words is None:
        check_gaze_plausible(Gaze(), faces, "m.onnx")
        return
    with pytest.raises(ModelFormatError, match=words) as e:
        check_gaze_plausible(Gaze(), faces, "m.onnx")
    assert str(e.value).startswith("m.onnx: ") and "\n" not in str(e.value)
