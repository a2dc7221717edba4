import pytest
import torch

from securegaze.errors import ConfigError
from securegaze.models import MODELS, create_model, model_from_config


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
    assert {"small_cnn", "resnet18", "mobilenet_v3"} <= set(MODELS.names())
