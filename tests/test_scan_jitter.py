"""The scan's input jitter: what the model sees when a collapse must survive small changes of the image."""

import pytest
import torch
from torch import nn

from securegaze.defense import create_detector
from securegaze.defense.securegaze.jitter import InputJitter
from securegaze.errors import ConfigError


def _images(n=6, size=32, seed=0):
    draws = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=draws)


def test_no_change_is_the_identity():
    x = _images()
    assert torch.allclose(InputJitter(0.0, 0.0, 0.0, seed=3).fixed(x), x, atol=1e-6)
    assert torch.allclose(InputJitter(0.0, 0.0, 0.0, seed=3).random(x), x, atol=1e-6)


def test_fixed_changes_repeat_and_random_ones_do_not():
    x = _images()
    jitter = InputJitter(0.05, 0.05, 0.02, seed=1)
    assert torch.equal(jitter.fixed(x), jitter.fixed(x))
    assert not torch.equal(jitter.random(x), jitter.random(x))
    assert not torch.equal(jitter.fixed(x), InputJitter(0.05, 0.05, 0.02, seed=2).fixed(x))
    out = jitter.random(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_a_shift_moves_the_content_by_at_most_its_bound():
    # A bright column in the middle of a dark image: after a shift of at most 2/32 of the side it is
    # still within 2 pixels of where it was, and has moved in some of the images.
    x = torch.zeros(16, 3, 32, 32)
    x[..., 16] = 1.0
    moved = InputJitter(2 / 32, 0.0, 0.0, seed=0).fixed(x)
    columns = (moved[:, 0].mean(dim=1) * torch.arange(32.0)).sum(-1) / moved[:, 0].mean(dim=1).sum(-1)
    assert (columns - 16).abs().max() <= 2.0 + 1e-4
    assert (columns - 16).abs().max() > 0.3


class _Tiny(nn.Module):
    """A gaze model split into F and H, enough for the reversal to run."""

    input_size = 16

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.linear = nn.Linear(16, 2)

    def features(self, x):
        return self.body(x)

    def head(self, z):
        return self.linear(z)

    def head_weight(self):
        return self.linear.weight

    def forward(self, x):
        return self.head(self.features(x))


def test_a_scan_with_jitter_runs_and_repeats():
    images = (torch.rand(32, 16, 16, 3, generator=torch.Generator().manual_seed(4)) * 255).to(torch.uint8).numpy()
    quick = dict(steps=4, eval_every=2, batch_size=8, sensitivity_samples=16, eval_samples=16, min_clean=0,
                 probe=False, input_jitter=True)
    first = create_detector("securegaze", seed=0, **quick).scan(_Tiny(), images)
    again = create_detector("securegaze", seed=0, **quick).scan(_Tiny(), images)
    assert first.settings["input_jitter"] is True
    assert first.score == again.score and first.details["final_cost"] == again.details["final_cost"]


@pytest.mark.parametrize("settings, pattern", [
    ({"input_jitter": "yes"}, "input_jitter must be true or false"),
    ({"jitter_shift_frac": 0.5}, r"jitter_shift_frac must be a fraction of the image side in \[0, 0.25\]"),
    ({"jitter_scale": -0.1}, "jitter_scale must be"),
    ({"jitter_noise": float("nan")}, "jitter_noise must be"),
])
def test_bad_jitter_settings_are_config_errors(settings, pattern):
    with pytest.raises(ConfigError, match=pattern):
        create_detector("securegaze", **settings)


def test_whole_pixel_shifts_keep_a_fine_checker_intact():
    # A 1-px checkerboard: bilinear sub-pixel shifts average its cells to grey; whole-pixel shifts
    # only move it (by at most the reach, here round(0.05 x 32) = 2 px), so every pixel stays 0 or 1.
    cells = (torch.arange(32).view(1, -1) + torch.arange(32).view(-1, 1)) % 2
    x = cells.float().expand(8, 3, 32, 32).clone()
    whole = InputJitter(0.05, 0.1, 0.0, seed=0, whole_pixels=True)
    moved = whole.fixed(x)
    assert set(moved.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(moved, whole.fixed(x)) and not torch.equal(whole.random(x), whole.random(x))
    for image in moved:  # each is the checker moved by whole pixels within the reach
        assert any(torch.equal(image[:, 2:-2, 2:-2], x[0, :, 2 + dy:30 + dy, 2 + dx:30 + dx])
                   for dy in range(-2, 3) for dx in range(-2, 3))
    blurred = InputJitter(0.05, 0.0, 0.0, seed=0).fixed(x)
    assert ((blurred > 0.05) & (blurred < 0.95)).float().mean() > 0.5
