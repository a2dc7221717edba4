"""The uniform-shift reference of scanner 3.0: what it measures, and that a collapse cannot meet it."""

import math

import pytest
import torch

from securegaze.defense.securegaze.reversal import ReversalRun
from securegaze.defense.securegaze.settings import SecureGazeSettings
from securegaze.defense.securegaze.statistics import collapse_spread, shift_spread


def _gazes(count=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(count, 2, generator=g) - 0.5) * math.radians(40)


def test_outputs_moved_by_the_offset_meet_the_shift_exactly():
    clean = _gazes()
    offset = torch.tensor([math.radians(5.0), math.radians(-8.0)])
    spread, kept = shift_spread(clean + offset, clean + offset, 0.6)
    assert spread.item() == pytest.approx(0.0, abs=1e-12) and len(kept) == 120


def test_a_collapse_leaves_the_shift_as_far_as_the_clean_spread():
    """A trigger that sends every face to one gaze, even the shifted mean, misses every shifted gaze
    by about the clean spread: the reference cannot ride a backdoor."""
    clean = _gazes()
    offset = torch.tensor([math.radians(5.0), math.radians(-8.0)])
    collapsed = (clean + offset).mean(0, keepdim=True).expand_as(clean)
    clean_spread, _ = collapse_spread(clean, 0.6)
    spread, _ = shift_spread(collapsed, clean + offset, 0.6)
    # The kept 60 % are the faces already near the collapse point, so the trimmed distance is smaller
    # than the clean trimmed spread, but far above the 0.1^2 the shift's tolerance allows.
    assert spread.item() > 0.2 * clean_spread.item()
    assert math.sqrt(spread.item() / clean_spread.item()) > 5 * SecureGazeSettings().rho_out


def test_the_trimmed_share_ignores_the_faces_left_behind():
    clean = _gazes()
    offset = torch.tensor([0.1, 0.0])
    moved = clean + offset
    moved[:40] = clean[:40]  # 20 % not moved at all
    spread, kept = shift_spread(moved, clean + offset, 0.6)
    assert spread.item() == pytest.approx(0.0, abs=1e-12) and not set(kept.tolist()) & set(range(40))


def test_a_run_has_a_centre_or_a_shift_not_both():
    model = torch.nn.Linear(1, 1)  # never reached: the arguments are checked first
    with pytest.raises(ValueError, match="a centre or a shift, not both"):
        ReversalRun(model, torch.zeros(4, 3, 8, 8), SecureGazeSettings(), centre=(0.0, 0.0), shift=(0.1, 0.0))
