"""The head made blind to the backdoor's feature directions (mitigation version 5)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from securegaze.defense.feature_directions import backdoor_directions, blind_head
from securegaze.defense.mitigation import mitigate
from securegaze.defense.securegaze import TriggerGenerator
from securegaze.errors import ConfigError
from securegaze.models import create_model


def PatchEdit(row: int, col: int) -> TriggerGenerator:  # noqa: N802 - reads like the class it stands for
    """A reversed-trigger generator whose edit is a fixed bright 6-px square at (row, col)."""
    generator = TriggerGenerator(32)
    with torch.no_grad():
        generator.static[:, :, row:row + 6, col:col + 6] = 6.0
    return generator.eval()


def _model(decoding: str):
    torch.manual_seed(0)
    return create_model("small_cnn", input_size=32, width=8, decoding=decoding).eval()


def _images(n: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("decoding", ["direct", "binned"])
def test_blind_head_ignores_the_directions_and_keeps_the_rest(decoding):
    model, x = _model(decoding), _images()
    u, mu = backdoor_directions(model, x, [PatchEdit(2, 2), PatchEdit(20, 24)])
    assert u.shape == (model.feature_dim, 2)
    np.testing.assert_allclose((u.T @ u).numpy(), np.eye(2), atol=1e-5)
    blinded = copy.deepcopy(model)
    assert blind_head(blinded, u, mu, x)
    with torch.no_grad():
        z = model.features(x)
        # Moving the features along U changes nothing; the head equals the original on projected features.
        moved = z + 3.0 * u[:, 0] - 2.0 * u[:, 1]
        np.testing.assert_allclose(blinded.head(moved).numpy(), blinded.head(z).numpy(), atol=1e-5)
        projected = z - (z - mu) @ u @ u.T
        np.testing.assert_allclose(blinded.head(z).numpy(), model.head(projected).numpy(), atol=1e-5)
        # The features at their clean mean along U give the original answer.
        np.testing.assert_allclose(blinded.head(projected).numpy(), model.head(projected).numpy(), atol=1e-5)


def test_directions_drop_a_repeated_shift():
    model, x = _model("direct"), _images()
    u, _ = backdoor_directions(model, x, [PatchEdit(2, 2), PatchEdit(2, 2)])
    assert u.shape[1] == 1
    more, _ = backdoor_directions(model, x, [PatchEdit(2, 2), PatchEdit(2, 2), PatchEdit(20, 24)])
    assert more.shape[1] == 2
    assert abs(float(more[:, 0] @ u[:, 0])) == pytest.approx(1.0, abs=1e-5)


def test_blind_head_refuses_a_head_that_is_not_linear_in_the_features():
    class Squashed(nn.Module):
        input_size = 32

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 8))
            self.fc = nn.Linear(8, 2)

        def features(self, x):
            return self.body(x)

        def head(self, z):
            return self.fc(torch.tanh(z))

        def head_weight(self):
            return self.fc.weight

        def head_linears(self):
            return [self.fc]

        def forward(self, x):
            return self.head(self.features(x))

    torch.manual_seed(1)
    model, x = Squashed(), _images()
    u, mu = backdoor_directions(model, x, [PatchEdit(2, 2)])
    before = model.fc.weight.detach().clone(), model.fc.bias.detach().clone()
    assert not blind_head(model, u, mu, x)
    assert torch.equal(model.fc.weight, before[0]) and torch.equal(model.fc.bias, before[1])


def test_fine_tuning_keeps_the_head_blind():
    model, x = _model("direct"), _images(128)
    edits = [PatchEdit(2, 2)]
    u, mu = backdoor_directions(model, x, edits)
    blinded = copy.deepcopy(model)
    assert blind_head(blinded, u, mu, x)
    tuned = mitigate(blinded, x, edits, epochs=2, lr=1e-2, blind=u)
    assert float((tuned.head_weight().detach() @ u).abs().max()) < 1e-5
    # Without the projection the same fine-tuning brings the direction back into the head.
    free = mitigate(blinded, x, edits, epochs=2, lr=1e-2)
    assert float((free.head_weight().detach() @ u).abs().max()) > 1e-3


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_fine_tuning_rate_follows_the_schedule(schedule):
    model, x, lr = _model("direct"), _images(128), 1e-3
    rates = []
    mitigate(model, x, [PatchEdit(2, 2)], epochs=3, lr=lr, lr_schedule=schedule,
             progress=lambda p: rates.append(p.values["lr"]))
    assert len(rates) == 6 and rates[0] == pytest.approx(lr)
    if schedule == "constant":
        assert rates == pytest.approx([lr] * 6)
    else:  # a half cosine from lr towards 0, the last step at (1 + cos(5 pi / 6)) / 2 of it
        assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
        assert rates[-1] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * 5 / 6)))


def test_fine_tuning_refuses_an_unknown_schedule():
    with pytest.raises(ConfigError, match="mitigate: lr_schedule must be constant or cosine, got"):
        mitigate(_model("direct"), _images(64), [PatchEdit(2, 2)], epochs=1, lr_schedule="step")
