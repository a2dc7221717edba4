"""A scan stores images, model and generator channels last when the model allows it, and gives every
parameter its own layout back afterwards; a model that needs the usual layout is scanned in it."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from securegaze.bundle import open_model
from securegaze.data.synthetic import render_dataset, synthetic_style
from securegaze.defense import create_detector
from securegaze.defense.securegaze.layout import channels_last_works, memory_format, scan_layout
from securegaze.models.base import GazeModel

SMOKE = {"steps": 4, "eval_every": 2, "sensitivity_samples": 16, "eval_samples": 16, "min_clean": 0,
         "probe_steps": 2, "probe_refine_steps": 1}


class ViewGaze(GazeModel):
    """A gaze model whose feature map is flattened with ``view``: it needs the usual NCHW layout."""

    def __init__(self):
        super().__init__(input_size=32, feature_dim=16)
        self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.fc_features = nn.Linear(4 * 8 * 8, 16)

    def backbone(self, x):
        x = torch.relu(self.conv(x))
        return torch.relu(self.fc_features(x.view(len(x), -1)))


def _images(count=32):
    faces = render_dataset(count, 32, seed=5, config=synthetic_style("easy", size=32))
    return faces.images, torch.as_tensor(faces.images).permute(0, 3, 1, 2).float() / 255


def test_a_model_that_needs_the_usual_layout_is_scanned_in_it():
    torch.manual_seed(0)
    model = ViewGaze().eval()
    images, x = _images()
    with pytest.raises(RuntimeError):  # what the trial forward guards against
        model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    model.to(memory_format=torch.contiguous_format)
    assert not channels_last_works(model, x)
    assert memory_format(model.conv.weight) == torch.contiguous_format
    with scan_layout(model, x) as laid:
        assert laid is x and memory_format(model.conv.weight) == torch.contiguous_format
    report = create_detector("securegaze", **SMOKE).scan(model, images)
    assert np.isfinite(report.details["final_cost"])


def test_a_convolutional_model_is_scanned_channels_last_and_gets_its_own_layouts_back(tiny_gaze_bundles):
    model = open_model(tiny_gaze_bundles["benign"]).gaze_model().eval()
    images, x = _images()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs
    # One weight stored channels last by its owner: it must come back that way, the others as they were.
    convs[0].weight.data = convs[0].weight.data.contiguous(memory_format=torch.channels_last)
    before = {name: (t.stride(), t.clone()) for name, t in model.state_dict().items()}
    assert channels_last_works(model, x)
    with scan_layout(model, x) as laid:
        assert memory_format(laid) == torch.channels_last and torch.equal(laid, x)
        assert all(memory_format(m.weight) == torch.channels_last for m in convs if m.weight.shape[1] > 1)
        with torch.no_grad():
            inside = model(laid)
    with torch.no_grad():
        outside = model(x)
    assert torch.allclose(inside, outside, atol=1e-5)
    create_detector("securegaze", **SMOKE).scan(model, images)
    after = model.state_dict()
    for name, (stride, value) in before.items():
        assert after[name].stride() == stride and torch.equal(after[name], value), name


def test_the_trial_forward_leaves_the_model_as_it_was(tiny_gaze_bundles):
    model = open_model(tiny_gaze_bundles["benign"]).gaze_model().eval()
    _, x = _images(8)
    before = copy.deepcopy(model.state_dict())
    strides = {name: t.stride() for name, t in model.state_dict().items()}
    channels_last_works(model, x)
    assert all(torch.equal(before[k], v) and v.stride() == strides[k] for k, v in model.state_dict().items())
