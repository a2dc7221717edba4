import numpy as np
import pytest
import torch

from securegaze.errors import ConfigError
from securegaze.models import MODELS, create_model, model_from_config, model_kwargs_for


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("decoding", ["direct", "binned"])
def test_small_cnn_split_and_shapes(size, decoding):
    torch.manual_seed(0)
    model = create_model("small_cnn", input_size=size, width=8, decoding=decoding).eval()
    x = torch.rand(3, 3, size, size)
    z = model.features(x)
    assert z.shape == (3, model.feature_dim)
    out = model(x)
    assert out.shape == (3, 2)
    torch.testing.assert_close(out, model.head(z))
    rows = 2 if decoding == "direct" else 2 * model.bins.count
    assert model.head_weight().shape == (rows, model.feature_dim)


def test_binned_decoding_is_within_bin_range():
    model = create_model("small_cnn", input_size=32, width=8, decoding="binned").eval()
    with torch.no_grad():
        model.fc_pitch.bias.fill_(0)
        model.fc_pitch.weight.zero_()
        model.fc_pitch.bias[5] = 50.0  # all mass on bin 5
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    centre = model.bins.start_deg + model.bins.width_deg * 5.5
    assert torch.rad2deg(out[:, 0]).tolist() == pytest.approx([centre, centre], abs=1e-3)


@pytest.mark.parametrize("name,kwargs", [("resnet18", {}), ("mobilenet_v3", {"variant": "small"})])
def test_torchvision_models_build_from_scratch(name, kwargs):
    model = create_model(name, input_size=64, **kwargs).eval()
    with torch.no_grad():
        z = model.features(torch.rand(2, 3, 64, 64))
    assert z.shape == (2, model.feature_dim)
    rebuilt = model_from_config(model.config())
    assert type(rebuilt) is type(model)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown model 'vgg'.*small_cnn"):
        create_model("vgg")
    assert {"small_cnn", "plain_cnn", "resnet18", "mobilenet_v3"} <= set(MODELS.names())


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("downsample", ["maxpool", "stride"])
@pytest.mark.parametrize("decoding", ["direct", "binned"])
def test_plain_cnn_split_shapes_and_config(size, downsample, decoding):
    torch.manual_seed(0)
    model = create_model("plain_cnn", input_size=size, width=8, downsample=downsample, decoding=decoding).eval()
    x = torch.rand(3, 3, size, size)
    z = model.features(x)
    assert z.shape == (3, model.feature_dim)
    torch.testing.assert_close(model(x), model.head(z))
    rows = 2 if decoding == "direct" else 2 * model.bins.count
    assert model.head_weight().shape == (rows, model.feature_dim)
    # Global average pooling: the map before it is 4x4 at both sizes, whatever the downsampling.
    assert model.conv(model.normalize(x)).shape[-2:] == (4, 4)
    rebuilt = model_from_config(model.config())
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model(x))


@pytest.mark.parametrize("kwargs,match", [({"width": 0}, "width"), ({"downsample": "avg"}, "downsample"),
                                          ({"input_size": 8}, "input_size")])
def test_plain_cnn_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("plain_cnn", **kwargs)


def test_model_kwargs_for_gives_the_width_to_the_small_families_only():
    assert model_kwargs_for("plain_cnn", "direct", 12) == {"decoding": "direct", "width": 12}
    assert model_kwargs_for("small_cnn", "binned", 8) == {"decoding": "binned", "width": 8}
    # resnet18's width is its base channels (default 64): a small-CNN width must not shrink it.
    assert model_kwargs_for("resnet18", "direct", 24) == {"decoding": "direct"}


@pytest.mark.parametrize("name,kwargs,dim", [
    ("resnet18", {"width": 16, "stem": "compact"}, 128),
    ("resnet18", {"width": 32}, 256),
    ("mobilenet_v3", {"width_mult": 0.5}, 512),
    ("mobilenet_v3", {"width_mult": 0.5, "stem_stride": 1}, 512),
])
def test_cpu_sized_torchvision_options(name, kwargs, dim):
    torch.manual_seed(0)
    model = create_model(name, input_size=64, **kwargs).eval()
    full = create_model(name, input_size=64)
    small_params = sum(p.numel() for p in model.parameters())
    assert small_params < sum(p.numel() for p in full.parameters()) / 3
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert model.features(x).shape == (2, dim) == (2, model.feature_dim)
    rebuilt = model_from_config(model.config())
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model(x))


def test_default_torchvision_configs_are_unchanged():
    # Old bundles and checkpoints name only these keys; the defaults must rebuild the same modules.
    assert create_model("resnet18", input_size=64).config() == {
        "architecture": "resnet18", "input_size": 64, "decoding": "direct"}
    assert create_model("mobilenet_v3", input_size=64).config() == {
        "architecture": "mobilenet_v3", "input_size": 64, "decoding": "direct", "variant": "small"}
    keys = set(create_model("resnet18", input_size=64).state_dict())
    assert "trunk.layer4.1.bn2.running_mean" in keys and "trunk.fc.weight" not in keys


@pytest.mark.parametrize("name,kwargs", [
    ("plain_cnn", {"width": 8}),
    ("plain_cnn", {"width": 8, "downsample": "stride", "decoding": "binned"}),
    ("resnet18", {"width": 16, "stem": "compact"}),
    ("mobilenet_v3", {"width_mult": 0.5, "stem_stride": 1}),
])
def test_new_options_export_to_onnx_and_convert_back(name, kwargs, tmp_path):
    from securegaze.bundle import export_bundle, load_bundle

    torch.manual_seed(0)
    model = create_model(name, input_size=64, **kwargs)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):  # non-trivial BN statistics and weights
        loss = (model(torch.rand(8, 3, 64, 64)) - 0.1).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    manifest = export_bundle(model, tmp_path, name)
    assert manifest.config == model.config()
    bundle = load_bundle(tmp_path)
    converted = bundle.to_torch()  # checked against ONNX Runtime inside
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x).numpy()
        np.testing.assert_allclose(bundle.predict(x.numpy()), want, atol=1e-4)
        np.testing.assert_allclose(converted(x).numpy(), want, atol=1e-4)
        assert converted.features(x).shape == (3, model.feature_dim)
    torch.testing.assert_close(converted.head_weight().detach(), model.head_weight().detach())


def test_cpu_sized_presets_build_at_64_px_and_mobilenet_keeps_its_resolution():
    from securegaze.models import CPU_SIZED

    for name, kwargs in CPU_SIZED.items():
        assert create_model(name, input_size=64, **kwargs).config().items() >= kwargs.items()
    compact = create_model("mobilenet_v3", input_size=64, stem_stride=1).eval()
    with torch.no_grad():
        last = compact.trunk.features(compact.normalize(torch.rand(1, 3, 64, 64)))
    assert last.shape[-2:] == (4, 4)  # 2x2 with torchvision's stride-2 stem
    # Short CPU runs need BatchNorm statistics that follow the batches (see torchvision_models.py).
    assert {m.momentum for m in compact.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
    with pytest.raises(ValueError, match="stem_stride"):
        create_model("mobilenet_v3", stem_stride=3)
