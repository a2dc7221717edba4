"""Model bundles: export -> load -> ONNX Runtime and PyTorch round trips, the F/H split, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from securegaze.bundle import BundleManifest, export_bundle, load_bundle, sha256_file, verify_bundle
from securegaze.bundle import export as bundle_export
from securegaze.errors import ConfigError, InputFileError, ModelFormatError
from securegaze.geometry import CONVENTION
from securegaze.models import create_model

SIZE = 32
RAW_SIZE = 8  # input size of the hand-built "third-party" graphs
TOL = 1e-4


def _trained_small_cnn(decoding: str = "direct", seed: int = 0):
    """A small CNN after a few Adam steps on random data: BN statistics and weights are non-trivial."""
    torch.manual_seed(seed)
    model = create_model("small_cnn", input_size=SIZE, width=8, decoding=decoding)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        x = torch.rand(8, 3, SIZE, SIZE)
        target = torch.rand(8, 2) - 0.5
        loss = (model(x) - target).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def _images(n: int = 4, size: int = SIZE, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    model = _trained_small_cnn("direct")
    out = tmp_path_factory.mktemp("direct")
    manifest = export_bundle(
        model,
        out,
        "tiny-direct",
        provenance={"training_data": "random", "seed": 0, "metrics": {"test_angular_error_deg": 12.5}},
    )
    return model, out, manifest


@pytest.fixture(scope="module")
def binned(tmp_path_factory):
    model = _trained_small_cnn("binned", seed=1)
    out = tmp_path_factory.mktemp("binned")
    return model, out, export_bundle(model, out, "tiny-binned")


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(src, dst)
    return dst


def _edit_manifest(bundle_dir: Path, edit) -> None:
    path = bundle_dir / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# -- round trips --------------------------------------------------------------------------------


def test_export_writes_a_manifest_that_loads_back_identically(direct):
    model, out, manifest = direct
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]  # no temp files left
    assert manifest.onnx_sha256 == sha256_file(out / "model.onnx")
    assert manifest.input.size == SIZE and manifest.output.decoding == "direct"
    assert manifest.output.convention == CONVENTION and manifest.output.units == "radians"
    assert manifest.config == model.config()
    assert manifest.provenance.metrics == {"test_angular_error_deg": 12.5}
    assert manifest.provenance.created.tzinfo is not None
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest.provenance.software)
    onnx_model = onnx.load(str(out / "model.onnx"))
    assert max(o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    # The directory, its manifest and its model.onnx all open the same bundle (with the sha check).
    for path in (out, out / "manifest.json", out / "model.onnx"):
        bundle = load_bundle(path)
        assert bundle.manifest == manifest
        assert bundle.manifest_path == out / "manifest.json"
    assert verify_bundle(out) == manifest


@pytest.mark.parametrize("fixture", ["direct", "binned"])
def test_onnx_runtime_matches_pytorch(fixture, request):
    model, out, _ = request.getfixturevalue(fixture)
    x = _images(5)  # a batch size the export never traced: the batch axis is dynamic
    with torch.no_grad():
        want = model(x).numpy()
    got = load_bundle(out).predict(x)
    assert got.shape == (5, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    assert np.abs(want).max() > 1e-2  # the comparison is not between two near-zero outputs


def test_session_threads_and_provider_options(direct):
    _, out, _ = direct
    x = _images(3)
    one = load_bundle(out, threads=1, provider_options={"TensorrtExecutionProvider": {"trt_fp16_enable": True}})
    assert one._session.get_session_options().intra_op_num_threads == 1
    # Options for a provider that is not in use change nothing: the CPU session gives the same gaze.
    assert one.providers == ["CPUExecutionProvider"]
    np.testing.assert_array_equal(one.predict(x), load_bundle(out).predict(x))


def test_binned_manifest_and_decoding(binned):
    model, out, manifest = binned
    assert manifest.output.names == ["pitch_logits", "yaw_logits"]
    assert manifest.output.bins.count == model.bins.count
    bundle = load_bundle(out)
    x = _images(3)
    pitch_logits, yaw_logits = bundle.raw_outputs(x)
    centres = np.deg2rad(model.bins.centres_deg().numpy())
    softmax = torch.softmax(torch.from_numpy(pitch_logits), -1).numpy()
    np.testing.assert_allclose(bundle.predict(x)[:, 0], softmax @ centres, atol=1e-6)
    assert yaw_logits.shape == (3, model.bins.count)


@pytest.mark.parametrize("fixture", ["direct", "binned"])
def test_to_torch_splits_at_the_penultimate_features(fixture, request):
    model, out, _ = request.getfixturevalue(fixture)
    bundle = load_bundle(out)
    converted = bundle.to_torch()
    x = _images(4)
    with torch.no_grad():
        z = converted.features(x)
        assert z.shape == (4, model.feature_dim) and converted.feature_dim == model.feature_dim
        np.testing.assert_allclose(z.numpy(), model.features(x).numpy(), atol=TOL)
        np.testing.assert_allclose(converted(x).numpy(), bundle.predict(x), atol=TOL)
        np.testing.assert_allclose(converted.head(z).numpy(), model.head(z).numpy(), atol=TOL)
    assert torch.equal(converted.head_weight().detach(), model.head_weight().detach())
    assert converted.input_size == SIZE and converted.decoding == model.decoding
    # Gradients reach the image (the scanner's need) and H's weight rows (fine-tuning's need).
    x.requires_grad_(True)
    converted(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(linear.weight.grad is not None for linear in converted._head_linears)


def test_uint8_nhwc_images_equal_float_nchw(direct):
    _, out, _ = direct
    bundle = load_bundle(out)
    rgb = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    as_float = rgb.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    np.testing.assert_array_equal(bundle.predict(rgb), bundle.predict(as_float))
    assert bundle.predict(np.zeros((0, 3, SIZE, SIZE), np.float32)).shape == (0, 2)


@pytest.mark.parametrize(
    ("images", "expect"),
    [
        (np.zeros((2, 3, SIZE + 1, SIZE + 1), np.float32), "expects (N, 3, 32, 32)"),
        (np.zeros((3, SIZE, SIZE), np.float32), "expects (N, 3, 32, 32)"),
        (np.full((1, 3, SIZE, SIZE), 200.0, np.float32), "expected [0, 1]"),
        (np.full((1, 3, SIZE, SIZE), np.nan, np.float32), "NaN"),
    ],
    ids=["wrong-size", "no-batch-axis", "0-255-floats", "nan-input"],
)
def test_predict_rejects_bad_images(direct, images, expect):
    with pytest.raises(
        ModelFormatError, match=expect.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        load_bundle(direct[1]).predict(images)


def test_converted_model_can_be_bundled_again(direct, tmp_path):
    # The mitigation fine-tunes the converted module and ships it: it must export like a GazeModel.
    _, out, _ = direct
    original = load_bundle(out)
    converted = original.to_torch()
    manifest = export_bundle(converted, tmp_path / "again", "re-exported")
    assert manifest.architecture == "onnx"
    x = _images(3)
    np.testing.assert_allclose(load_bundle(tmp_path / "again").predict(x), original.predict(x), atol=TOL)


def test_resnet18_converts_and_matches(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet18", input_size=64).eval()
    with torch.no_grad():
        model.fc.weight.normal_(std=0.05)  # a gaze range of outputs, so the 1e-4 check means something
    export_bundle(model, tmp_path, "resnet")
    # torch's exporter shares equal-valued initializers (the untrained zero biases) through Identity
    # nodes; onnx2torch cannot read those, which is what to_torch's folding is for.
    assert any(n.op_type == "Identity" for n in onnx.load(str(tmp_path / "model.onnx")).graph.node)
    bundle = load_bundle(tmp_path)
    converted = bundle.to_torch()
    x = _images(2, size=64)
    with torch.no_grad():
        want = model(x).numpy()
        np.testing.assert_allclose(converted(x).numpy(), want, atol=TOL)
        assert converted.features(x).shape == (2, 512)
    np.testing.assert_allclose(bundle.predict(x), want, atol=TOL)
    assert torch.equal(converted.head_weight().detach(), model.fc.weight.detach())


def test_bare_onnx_gets_an_inferred_direct_manifest(direct, tmp_path):
    _, out, manifest = direct
    bare = tmp_path / "someone_elses_model.onnx"
    shutil.copy(out / "model.onnx", bare)
    bundle = load_bundle(bare)
    assert bundle.manifest_path is None
    assert bundle.manifest.input.size == SIZE
    assert bundle.manifest.output.decoding == "direct" and bundle.manifest.output.names == ["gaze"]
    assert bundle.manifest.onnx_sha256 == manifest.onnx_sha256
    x = _images(2)
    np.testing.assert_array_equal(bundle.predict(x), load_bundle(out).predict(x))


def test_bare_binned_onnx_asks_for_a_manifest(binned, tmp_path):
    bare = tmp_path / "binned.onnx"
    shutil.copy(binned[1] / "model.onnx", bare)
    with pytest.raises(ModelFormatError, match=r"binned\.onnx has outputs .*securegaze describe .*--bins"):
        load_bundle(bare)


# -- third-party graphs built by hand -----------------------------------------------------------

_rng = np.random.default_rng(7)
W1 = (_rng.standard_normal((3 * RAW_SIZE * RAW_SIZE, 16)) * 0.1).astype(np.float32)
B1 = (_rng.standard_normal(16) * 0.1).astype(np.float32)
W2 = (_rng.standard_normal((16, 2)) * 0.5).astype(np.float32)
B2 = (_rng.standard_normal(2) * 0.1).astype(np.float32)
W3 = (_rng.standard_normal((2, 3 * RAW_SIZE * RAW_SIZE)) * 0.01).astype(np.float32)


def _save_graph(path: Path, nodes, initializers: dict[str, np.ndarray]) -> Path:
    graph = helper.make_graph(
        nodes,
        "third_party",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, RAW_SIZE, RAW_SIZE])],
        [helper.make_tensor_value_info("gaze", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _mlp_trunk():
    """input -> Flatten ("flat") -> MatMul+Add -> Relu ("features", (N, 16))."""
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h1b"]),
        helper.make_node("Relu", ["h1b"], ["features"]),
    ]
    return nodes, {"w1": W1, "b1": B1}


# (head nodes, extra initializers, expected head_weight rows (K, 16))
THIRD_PARTY_HEADS = {
    "matmul-add": (
        [
            helper.make_node("MatMul", ["features", "w2"], ["mm"]),
            helper.make_node("Add", ["b2", "mm"], ["gaze"]),
        ],
        {"w2": W2, "b2": B2},
        W2.T,
    ),
    "gemm-transB0-alpha-beta-rowbias": (
        [helper.make_node("Gemm", ["features", "w2", "b2row"], ["gaze"], alpha=0.5, beta=2.0, transB=0)],
        {"w2": W2, "b2row": B2.reshape(1, 2)},
        0.5 * W2.T,
    ),
    "gemm-then-tanh": (
        [
            helper.make_node("Gemm", ["features", "w2t", "b2"], ["logit"], transB=1),
            helper.make_node("Tanh", ["logit"], ["gaze"]),
        ],
        {"w2t": np.ascontiguousarray(W2.T), "b2": B2},
        W2.T,
    ),
}


@pytest.mark.parametrize("style", list(THIRD_PARTY_HEADS))
def test_third_party_linear_heads_are_found(style, tmp_path):
    head_nodes, head_init, rows = THIRD_PARTY_HEADS[style]
    trunk_nodes, trunk_init = _mlp_trunk()
    path = _save_graph(tmp_path / f"{style}.onnx", trunk_nodes + head_nodes, {**trunk_init, **head_init})
    bundle = load_bundle(path)
    converted = bundle.to_torch()
    assert converted.feature_tensor == "features" and converted.feature_dim == 16
    np.testing.assert_allclose(converted.head_weight().detach().numpy(), rows, rtol=1e-6)
    x = _images(3, size=RAW_SIZE)
    with torch.no_grad():
        np.testing.assert_allclose(converted(x).numpy(), bundle.predict(x), atol=TOL)
        flat = x.reshape(3, -1).numpy()
        np.testing.assert_allclose(converted.features(x).numpy(), np.maximum(flat @ W1 + B1, 0), atol=1e-5)


def test_model_without_a_linear_last_layer_says_how_to_declare_the_split(tmp_path):
    weight = (np.random.default_rng(0).standard_normal((2, 3, 3, 3)) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "wc"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["conv"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["gaze"], axis=1),
    ]
    bundle = load_bundle(_save_graph(tmp_path / "conv_only.onnx", nodes, {"wc": weight}))
    assert bundle.predict(_images(2, size=RAW_SIZE)).shape == (2, 2)  # ONNX Runtime use is still fine
    with pytest.raises(ModelFormatError, match=r"conv_only\.onnx: .*no Gemm/MatMul.*\"feature_tensor\""):
        bundle.to_torch()


def test_declared_feature_tensor_splits_what_cannot_be_found(tmp_path):
    # gaze = Gemm(features) + Gemm(flat): the last linear layers read two tensors, no single split.
    trunk_nodes, trunk_init = _mlp_trunk()
    nodes = trunk_nodes + [
        helper.make_node("Gemm", ["features", "w2t"], ["a"], transB=1),
        helper.make_node("Gemm", ["flat", "w3"], ["b"], transB=1),
        helper.make_node("Add", ["a", "b"], ["gaze"]),
    ]
    init = {**trunk_init, "w2t": np.ascontiguousarray(W2.T), "w3": W3}
    path = _save_graph(tmp_path / "model.onnx", nodes, init)
    with pytest.raises(ModelFormatError, match=r"read different tensors.*feature_tensor"):
        load_bundle(path).to_torch()

    def declare(tensor: str) -> None:
        manifest = BundleManifest(
            name="declared",
            architecture="third-party",
            input={"name": "input", "size": RAW_SIZE},
            output={"decoding": "direct", "names": ["gaze"]},
            feature_split={"feature_tensor": tensor},
            onnx_sha256=sha256_file(path),
        )
        (tmp_path / "manifest.json").write_text(manifest.to_json())

    declare("features")  # not a cut: the Gemm on "flat" bypasses it
    with pytest.raises(ModelFormatError, match=r"the head H also depends on 'input'"):
        load_bundle(tmp_path).to_torch()
    declare("no_such_tensor")
    with pytest.raises(
        ModelFormatError, match=r"declares feature_tensor 'no_such_tensor' but .*model\.onnx has no"
    ):
        load_bundle(tmp_path)
    declare("flat")
    bundle = load_bundle(tmp_path)
    converted = bundle.to_torch()
    assert converted.feature_tensor == "flat" and converted.feature_dim == 3 * RAW_SIZE * RAW_SIZE
    # H's linear layers reading "flat", in graph order: the hidden MatMul (16 rows), then w3 (2 rows).
    np.testing.assert_allclose(
        converted.head_weight().detach().numpy(), np.concatenate([W1.T, W3]), rtol=1e-6
    )
    x = _images(2, size=RAW_SIZE)
    with torch.no_grad():
        np.testing.assert_allclose(converted(x).numpy(), bundle.predict(x), atol=TOL)


def test_third_party_binned_head_with_one_gemm_and_a_split(tmp_path):
    # One Gemm gives 2*count logits, Split emits yaw *first*; the manifest names pitch first and
    # that order, not the node's, must decide which logits are pitch.
    count = 6
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2 * count, 16)).astype(np.float32)
    trunk_nodes, trunk_init = _mlp_trunk()
    nodes = trunk_nodes + [
        helper.make_node("Gemm", ["features", "w"], ["logits"], transB=1),
        helper.make_node("Split", ["logits", "sizes"], ["yaw_logits", "pitch_logits"], axis=1),
    ]
    init = {**trunk_init, "w": w, "sizes": np.array([count, count], np.int64)}
    graph = helper.make_graph(
        nodes,
        "binned_third_party",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, RAW_SIZE, RAW_SIZE])],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", count])
            for n in ("yaw_logits", "pitch_logits")
        ],
        initializer=[numpy_helper.from_array(v, k) for k, v in init.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "model.onnx"))
    manifest = BundleManifest(
        name="l2cs-like",
        architecture="third-party",
        input={"name": "input", "size": RAW_SIZE},
        output={
            "decoding": "binned",
            "names": ["pitch_logits", "yaw_logits"],
            "bins": {"count": count, "start_deg": -30.0, "width_deg": 10.0},
        },
        onnx_sha256=sha256_file(tmp_path / "model.onnx"),
    )
    (tmp_path / "manifest.json").write_text(manifest.to_json())
    bundle = load_bundle(tmp_path)
    converted = bundle.to_torch()
    x = _images(3, size=RAW_SIZE)
    pitch_logits, yaw_logits = bundle.raw_outputs(x)
    with torch.no_grad():
        torch_pitch, torch_yaw = converted.head_logits(converted.features(x))
        np.testing.assert_allclose(torch_pitch.numpy(), pitch_logits, atol=1e-5)
        np.testing.assert_allclose(converted(x).numpy(), bundle.predict(x), atol=TOL)
    assert not np.allclose(pitch_logits, yaw_logits)
    np.testing.assert_array_equal(converted.head_weight().detach().numpy(), w)


def test_nan_outputs_are_an_error(tmp_path):
    weight = np.full((2, 3 * RAW_SIZE * RAW_SIZE), np.nan, np.float32)
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w"], ["gaze"], transB=1),
    ]
    bundle = load_bundle(_save_graph(tmp_path / "nan.onnx", nodes, {"w": weight}))
    with pytest.raises(ModelFormatError, match=r"nan\.onnx produced NaN or inf gaze for 2 of 2 images"):
        bundle.predict(_images(2, size=RAW_SIZE))


# -- bad input ----------------------------------------------------------------------------------


def _truncate(bundle_dir: Path) -> None:
    onnx_path = bundle_dir / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[: onnx_path.stat().st_size // 2])
    _edit_manifest(bundle_dir, lambda m: m.update(onnx_sha256=sha256_file(onnx_path)))


def _garble(bundle_dir: Path) -> None:
    onnx_path = bundle_dir / "model.onnx"
    onnx_path.write_bytes(np.random.default_rng(0).bytes(4096))
    _edit_manifest(bundle_dir, lambda m: m.update(onnx_sha256=sha256_file(onnx_path)))


def _flip_one_byte(bundle_dir: Path) -> None:
    onnx_path = bundle_dir / "model.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[-100] ^= 0xFF  # inside the weights: still a valid ONNX file, only the hash can tell
    onnx_path.write_bytes(bytes(data))


def _declare_size_64(bundle_dir: Path) -> None:
    def edit(m):
        m["input"]["size"] = 64
        m["config"]["input_size"] = 64

    _edit_manifest(bundle_dir, edit)


BAD_BUNDLES = [
    # (id, how to break a copy of the direct bundle, error class, message pattern)
    (
        "truncated-onnx",
        _truncate,
        InputFileError,
        r"model\.onnx is not a readable ONNX model \(truncated or corrupt",
    ),
    ("corrupt-bytes", _garble, InputFileError, r"model\.onnx is not a readable ONNX model"),
    (
        "sha-mismatch",
        _flip_one_byte,
        ModelFormatError,
        r"model\.onnx sha256 [0-9a-f]{12}… does not match manifest [0-9a-f]{12}…; the file was changed or corrupted",
    ),
    (
        "input-size-mismatch",
        _declare_size_64,
        ModelFormatError,
        r"model\.onnx takes input 'image' of shape \(batch, 3, 32, 32\) but manifest\.json declares \(N, 3, 64, 64\)",
    ),
    (
        "invalid-json",
        lambda d: (d / "manifest.json").write_text('{"name": "x",'),
        InputFileError,
        r"manifest\.json is not valid JSON \(line 1",
    ),
    (
        "unknown-field",
        lambda d: _edit_manifest(d, lambda m: m.update(colour_order="RGB")),
        ModelFormatError,
        r"manifest\.json is not a valid bundle manifest: colour_order: Extra inputs are not permitted",
    ),
    (
        "missing-field",
        lambda d: _edit_manifest(d, lambda m: m.pop("onnx_sha256")),
        ModelFormatError,
        r"not a valid bundle manifest: onnx_sha256: Field required",
    ),
    (
        "bad-decoding",
        lambda d: _edit_manifest(d, lambda m: m["output"].update(decoding="heatmap")),
        ModelFormatError,
        r"output\.decoding: Input should be 'direct' or 'binned'",
    ),
    (
        "other-convention",
        lambda d: _edit_manifest(d, lambda m: m["output"].update(convention="yaw, pitch")),
        ModelFormatError,
        r"output\.convention: Value error, convention must be exactly",
    ),
    (
        "onnx-path-escapes",
        lambda d: _edit_manifest(d, lambda m: m.update(onnx_file="../model.onnx")),
        ModelFormatError,
        r"onnx_file: Value error, onnx_file must be a file name inside the bundle directory",
    ),
    (
        "missing-onnx",
        lambda d: (d / "model.onnx").unlink(),
        InputFileError,
        r"model\.onnx not found; .*manifest\.json names it",
    ),
    (
        "missing-manifest",
        lambda d: (d / "manifest.json").unlink(),
        InputFileError,
        r"bundle has no manifest\.json; expected a bundle directory",
    ),
    (
        "output-name-mismatch",
        lambda d: _edit_manifest(d, lambda m: m["output"].update(names=["angles"])),
        ModelFormatError,
        r"model\.onnx has outputs \['gaze'\]; manifest\.json names output 'angles'",
    ),
]


@pytest.mark.parametrize(
    ("breakage", "error", "pattern"), [b[1:] for b in BAD_BUNDLES], ids=[b[0] for b in BAD_BUNDLES]
)
def test_bad_bundles_fail_with_one_clear_line(direct, tmp_path, breakage, error, pattern):
    bundle_dir = _copy(direct[1], tmp_path)
    breakage(bundle_dir)
    with pytest.raises(error, match=pattern) as info:
        load_bundle(bundle_dir)
    assert "\n" not in str(info.value)


def test_binned_outputs_declared_direct_are_rejected(binned, tmp_path):
    bundle_dir = _copy(binned[1], tmp_path)

    def as_direct(m):
        m["output"].update(decoding="direct", names=["pitch_logits"], bins=None)
        m["config"]["decoding"] = "direct"

    _edit_manifest(bundle_dir, as_direct)
    with pytest.raises(
        ModelFormatError, match=r"output 'pitch_logits' has shape \(batch, 28\); direct decoding"
    ):
        load_bundle(bundle_dir)


def test_missing_path_is_an_input_file_error(tmp_path):
    with pytest.raises(InputFileError, match=r"nowhere does not exist; expected a bundle directory"):
        load_bundle(tmp_path / "nowhere")


def test_failed_export_check_leaves_the_old_bundle_untouched(direct, tmp_path, monkeypatch):
    bundle_dir = _copy(direct[1], tmp_path)
    before = {p.name: p.read_bytes() for p in bundle_dir.iterdir()}
    monkeypatch.setattr(bundle_export, "MATCH_ATOL", -1.0)  # no export can pass this check
    with pytest.raises(ModelFormatError, match="differs from PyTorch"):
        export_bundle(_trained_small_cnn(seed=3), bundle_dir, "never-written")
    assert {p.name: p.read_bytes() for p in bundle_dir.iterdir()} == before


def test_unavailable_providers_fall_back_to_cpu_with_a_reason(direct):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA is available here; the fallback cannot be observed")
    bundle = load_bundle(direct[1], providers=["cuda"])
    assert bundle.providers == ["CPUExecutionProvider"]
    assert any("CUDAExecutionProvider is not available" in note for note in bundle.provider_notes)
    with pytest.raises(ConfigError, match="unknown ONNX Runtime provider 'gpu'"):
        load_bundle(direct[1], providers=["gpu"])


@settings(max_examples=25, deadline=None)
@given(
    metrics=st.dictionaries(
        st.text(min_size=1, max_size=12), st.floats(allow_nan=False, allow_infinity=False), max_size=4
    ),
    seed=st.none() | st.integers(0, 2**31),
    notes=st.text(max_size=40),
    decoding=st.sampled_from(["direct", "binned"]),
)
def test_manifest_json_round_trip(metrics, seed, notes, decoding):
    output = {"decoding": decoding, "names": ["gaze"]}
    if decoding == "binned":
        output = {
            "decoding": "binned",
            "names": ["p", "y"],
            "bins": {"count": 28, "start_deg": -42, "width_deg": 3},
        }
    manifest = BundleManifest(
        name="m",
        architecture="small_cnn",
        config={"input_size": 64},
        input={"size": 64},
        output=output,
        onnx_sha256="0" * 64,
        provenance={"metrics": metrics, "seed": seed, "notes": notes},
    )
    assert BundleManifest.from_json(manifest.to_json()) == manifest


def test_open_model_reads_weights_whatever_the_case_of_their_suffix(tmp_path):
    from securegaze.bundle import open_model
    from securegaze.io import save_weights

    torch.manual_seed(0)
    model = create_model("small_cnn", input_size=32, width=8).eval()
    save_weights(model, tmp_path / "W.SAFETENSORS")
    opened = open_model(tmp_path / "W.SAFETENSORS")
    assert opened.kind == "weights"
    predictor = opened.predictor()  # evaluate: PyTorch, like scan's gaze_model()
    assert predictor.engine == "PyTorch" and predictor.input_size == 32
    images = np.full((2, 32, 32, 3), 128, np.uint8)
    with torch.no_grad():
        expected = opened.gaze_model()(torch.full((2, 3, 32, 32), 128 / 255)).numpy()
    np.testing.assert_allclose(predictor.predict(images), expected, atol=1e-6)


def test_weights_file_bytes_depend_only_on_tensors_and_metadata(tmp_path):
    """The safetensors writer may order its header's keys differently from one process to the next;
    the saved bytes must not, or a published weights sha256 cannot be reproduced."""
    import random

    from safetensors import safe_open

    from securegaze.io import canonical_safetensors, save_safetensors

    tensors = {"b.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a.bias": torch.ones(3)}
    meta = {"summary": "{}", "config": '{"width": 8}', "z": "1"}
    save_safetensors(tensors, tmp_path / "one.safetensors", meta)
    items = list(meta.items())
    random.Random(3).shuffle(items)
    save_safetensors(dict(reversed(tensors.items())), tmp_path / "two.safetensors", dict(items))
    one, two = (tmp_path / "one.safetensors").read_bytes(), (tmp_path / "two.safetensors").read_bytes()
    assert one == two and canonical_safetensors(one) == one
    assert int.from_bytes(one[:8], "little") % 8 == 0
    with safe_open(str(tmp_path / "one.safetensors"), "pt") as fh:
        assert fh.metadata() == meta
        assert torch.equal(fh.get_tensor("b.weight"), tensors["b.weight"])
    # A header whose keys came out in another order is put back in the canonical one.
    size = int.from_bytes(one[:8], "little")
    header = json.loads(one[8:8 + size])
    shuffled = json.dumps(dict(reversed(list(header.items())))).encode()
    shuffled += b" " * (-len(shuffled) % 8)
    assert canonical_safetensors(len(shuffled).to_bytes(8, "little") + shuffled + one[8 + size:]) == one


IMAGENET_MEAN_255 = (0.406 * 255, 0.456 * 255, 0.485 * 255)  # BGR order, [0, 255] units
IMAGENET_STD_255 = (0.225 * 255, 0.224 * 255, 0.229 * 255)


class _StandardisedBGR(torch.nn.Module):
    """A third-party-style graph: takes BGR in [0, 255] standardised per channel, then runs ``model``
    (which takes RGB in [0, 1]); declared right, it must give exactly ``model``'s gaze."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN_255).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD_255).view(1, 3, 1, 1))

    def forward(self, x):
        bgr255 = x * self.std + self.mean
        return self.model(bgr255.flip(1) / 255.0)


def test_declared_channel_order_range_and_standardisation_are_applied_everywhere(direct, tmp_path):
    """A graph that wants BGR, [0, 255] and per-channel mean / std: the manifest says so, and ONNX Runtime,
    the PyTorch conversion (the scan's gradients) and the TensorRT engine record all feed it that; left
    undeclared, the same file predicts something else."""
    from edge_app.engines import input_affine_record
    from securegaze.bundle.manifest_checks import infer_manifest

    model, _, _ = direct
    bare = tmp_path / "bare" / "model.onnx"
    bare.parent.mkdir()
    torch.onnx.export(_StandardisedBGR(model).eval(), (_images(2),), str(bare), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["gaze"], dynamic_axes={"input": {0: "n"}, "gaze": {0: "n"}})
    declared = tmp_path / "declared"
    declared.mkdir()
    shutil.copyfile(bare, declared / "model.onnx")
    data = json.loads(infer_manifest(declared / "model.onnx", onnx.load(str(bare))).to_json())
    data["input"].update(channel_order="BGR", value_range=[0, 255], mean=list(IMAGENET_MEAN_255),
                         std=list(IMAGENET_STD_255))
    (declared / "manifest.json").write_text(json.dumps(data))

    x = _images(4)
    bundle = load_bundle(declared)
    converted = bundle.to_torch()  # checks its own gradients: outside no_grad
    with torch.no_grad():
        expected = model(x).numpy()
        np.testing.assert_allclose(bundle.predict(x), expected, atol=TOL)
        np.testing.assert_allclose(converted(x).numpy(), expected, atol=TOL)
        assert np.abs(load_bundle(bare).predict(x) - expected).max() > 10 * TOL
    record = input_affine_record(bundle.manifest.input)
    assert record["flip_channels"] is True
    np.testing.assert_allclose(record["scale"], [255 / s for s in IMAGENET_STD_255], rtol=1e-6)
    np.testing.assert_allclose(record["offset"], [-m / s for m, s in zip(IMAGENET_MEAN_255, IMAGENET_STD_255, strict=True)],
                               rtol=1e-6)


@pytest.mark.parametrize("field,value,pattern", [
    ("std", [1.0, 0.0, 1.0], "std must be three positive numbers"),
    ("mean", [0.0, float("nan"), 0.0], "mean must be three finite numbers"),
    ("mean", [0.5, 0.5], "mean"),
])
def test_bad_standardisation_is_one_clear_line(direct, tmp_path, field, value, pattern):
    bundle_dir = _copy(direct[1], tmp_path)
    _edit_manifest(bundle_dir, lambda d: d["input"].update({field: value}))
    with pytest.raises(ModelFormatError, match=pattern):
        load_bundle(bundle_dir)


def test_converted_head_can_be_made_blind(direct):
    # Mitigation version 5 folds a projection into H's linear layers; a converted ONNX head takes it too.
    from securegaze.defense.feature_directions import blind_head

    _, out, _ = direct
    converted = load_bundle(out).to_torch()
    x = _images(16)
    with torch.no_grad():
        z = converted.features(x)
    u = torch.linalg.qr(torch.randn(z.shape[1], 2, generator=torch.Generator().manual_seed(0)))[0]
    assert blind_head(converted, u, z.mean(0), x)
    with torch.no_grad():
        np.testing.assert_allclose(converted.head(z + 2.0 * u[:, 0]).numpy(), converted.head(z).numpy(), atol=TOL)
    assert float((converted.head_weight().detach() @ u).abs().max()) < 1e-5
