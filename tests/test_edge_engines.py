"""Gaze engines: ONNX Runtime on the CPU, bad models, and the TensorRT path (skipped without a GPU)."""

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_app.engines import (
    NonFiniteGazeError,
    OnnxRuntimeEngine,
    TensorRTEngine,
    build_tensorrt_engine,
    check_engine_reading,
    create_engine,
    engine_cache_key,
    engine_reading,
    tensorrt_unavailable_reason,
)
from securegaze.data.synthetic import render_dataset, synthetic_style
from securegaze.errors import ConfigError, ModelFormatError
from securegaze.geometry import angular_error_deg
from securegaze.io import sha256_file

DEFAULT = "models/default"


@pytest.fixture(scope="module")
def engine():
    return OnnxRuntimeEngine(DEFAULT, providers=["cpu"], threads=1)


def test_onnxruntime_engine_runs_the_default_model(engine):
    # Faces of the renderer style the default model trains on (face-centred, as the app normalises them).
    faces = render_dataset(64, seed=123, config=synthetic_style("face_centred", size=engine.input_size))
    gaze = engine.infer(faces.images)
    assert gaze.shape == (64, 2) and gaze.dtype == np.float32
    # The default model's held-out error is 1.5 deg; 64 faces stay well under 5.
    assert float(np.mean(angular_error_deg(gaze, faces.gaze))) < 5.0
    assert engine.providers == ["CPUExecutionProvider"] and engine.input_size == 128
    assert engine.onnx_sha256 == sha256_file("models/default/model.onnx")


def test_engine_rejects_crops_of_the_wrong_size(engine):
    with pytest.raises(ModelFormatError, match=r"\(N, 128, 128, 3\) uint8"):
        engine.infer(np.zeros((1, 32, 32, 3), np.uint8))


def test_auto_providers_fall_back_to_the_cpu():
    e = create_engine("onnxruntime", DEFAULT, "auto", threads=1)
    assert e.providers[-1] == "CPUExecutionProvider"


def test_model_whose_input_size_does_not_match_its_manifest(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["input"]["size"] = 32
    manifest["config"]["input_size"] = 32
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match=r"declares \(N, 3, 32, 32\)"):
        OnnxRuntimeEngine(bundle, providers=["cpu"])


def _nan_model(path):
    """A bare ONNX model (N, 3, 16, 16) -> (N, 2) whose output is NaN: sqrt of a negative mean."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("gaze", TensorProto.FLOAT, ["N", 2])
    w = numpy_helper.from_array(np.full((3, 2), -1.0, np.float32), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w"], ["neg"]),
        helper.make_node("Sqrt", ["neg"], ["gaze"]),
    ]
    graph = helper.make_graph(nodes, "nan", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_nan_outputs_raise_the_dedicated_error(tmp_path):
    e = OnnxRuntimeEngine(_nan_model(tmp_path / "nan.onnx"), providers=["cpu"])
    with pytest.raises(NonFiniteGazeError, match="NaN or inf"):
        e.infer(np.full((2, 16, 16, 3), 128, np.uint8))


def test_unknown_engine_and_missing_tensorrt_engine_file():
    with pytest.raises(ConfigError, match="unknown engine"):
        create_engine("openvino", DEFAULT)
    with pytest.raises(ConfigError, match="tensorrt_engine"):
        create_engine("tensorrt", DEFAULT)


def test_engine_cache_key_names_everything_that_changes_an_engine():
    sha = "ab" * 32
    key = engine_cache_key(sha, "10.3.0", "fp16")
    assert key.startswith("gaze-abababab") and "trt10.3.0" in key and key.endswith("fp16")
    assert key != engine_cache_key(sha, "10.3.0", "fp32") != engine_cache_key(sha, "8.6.1", "fp16")


def test_an_engine_is_keyed_and_checked_on_how_the_model_is_read(tmp_path):
    # The plain default bundle keeps its key; the same ONNX read another way gets another key, and an
    # engine built for one reading is refused for another.
    from securegaze.bundle import load_bundle

    plain = engine_reading(load_bundle(DEFAULT))
    sha = "ab" * 32
    assert engine_cache_key(sha, "10.3.0", "fp16", plain) == engine_cache_key(sha, "10.3.0", "fp16")
    described = {**plain, "input_affine": {"flip_channels": False, "scale": [255.0] * 3, "offset": [0.0] * 3}}
    adapted = {**plain, "adaptations": ["m.onnx: its input 'x' is channels-last (N, 64, 64, 3); ..."]}
    keys = {engine_cache_key(sha, "10.3.0", "fp16", r) for r in (plain, described, adapted)}
    assert len(keys) == 3
    check_engine_reading(tmp_path / "e.engine", {"reading": plain}, plain)
    with pytest.raises(ModelFormatError, match=r"e\.engine was built for another reading of the model \(input_affine "
                       r"differ.*rebuild the engine"):
        check_engine_reading(tmp_path / "e.engine", {"reading": plain}, described)
    # A record from before readings were kept: its input conversion and outputs, unadapted.
    old = {"input_affine": plain["input_affine"], "output_names": plain["output_names"], "decoding": "direct"}
    check_engine_reading(tmp_path / "e.engine", old, plain)
    with pytest.raises(ModelFormatError, match=r"\(adaptations differ"):
        check_engine_reading(tmp_path / "e.engine", old, adapted)


TRT_REASON = tensorrt_unavailable_reason()


@pytest.mark.skipif(TRT_REASON is not None, reason=f"native TensorRT engine not testable here: {TRT_REASON}")
def test_tensorrt_engine_matches_onnxruntime(tmp_path, engine):
    progress = []
    path = build_tensorrt_engine(DEFAULT, tmp_path / "engines", "fp16", progress=progress.append)
    record = json.loads(path.with_name(path.name + ".json").read_text())
    assert record["onnx_sha256"] == engine.onnx_sha256 and record["precision"] == "fp16" and progress
    # Built once: the second call finds the cached engine.
    assert build_tensorrt_engine(DEFAULT, tmp_path / "engines", "fp16") == path
    trt_engine = TensorRTEngine(path, expected_onnx_sha256=engine.onnx_sha256)
    faces = render_dataset(16, 64, seed=5).images
    diff = angular_error_deg(trt_engine.infer(faces), engine.infer(faces))
    assert float(np.max(diff)) < 0.5  # FP16 against FP32, degrees
    with pytest.raises(ModelFormatError, match="not the scanned model"):
        TensorRTEngine(path, expected_onnx_sha256="0" * 64)
    from securegaze.bundle import load_bundle

    assert record["reading"] == engine_reading(load_bundle(DEFAULT))
    with pytest.raises(ModelFormatError, match="another reading of the model"):
        TensorRTEngine(path, engine.onnx_sha256, {**record["reading"], "adaptations": ["another form"]})


def test_tensorrt_engine_without_tensorrt_says_why():
    if TRT_REASON is None:
        pytest.skip("TensorRT is available here; the refusal path is not reachable")
    with pytest.raises(ConfigError, match="cannot run here"):
        TensorRTEngine("whatever.engine")
    with pytest.raises(ConfigError, match="cannot build a TensorRT engine"):
        build_tensorrt_engine(DEFAULT, "unused")


def test_nan_gaze_in_the_pipeline_is_no_face_with_the_reason(tmp_path):
    from edge_app.config import EdgeConfig
    from edge_app.pipeline import Pipeline
    from edge_app.sources import Frame
    from edge_app.synthetic_driver import SHORT_SCRIPT, SyntheticDriver
    from edge_app.zones import load_zone_map

    zones = load_zone_map()
    image, t, _ = SyntheticDriver(zones.targets_deg(), SHORT_SCRIPT, fps=2).render_frame(1)
    pipeline = Pipeline(EdgeConfig(), OnnxRuntimeEngine(_nan_model(tmp_path / "nan.onnx"), providers=["cpu"]), zones,
                        static_images=True)
    try:
        rec = pipeline.process(Frame(image, t, 0, 0.0))
    finally:
        pipeline.close()
    assert rec.face is not None and rec.gaze is None and rec.zone is None
    assert rec.attention.state.value == "NO_FACE" and "NaN" in rec.attention.reason
    assert pipeline.invalid_gaze_frames == 1
