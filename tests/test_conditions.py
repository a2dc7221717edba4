"""Cabin conditions of the synthetic renderer: what each changes, what it leaves alone, and that the
faces without conditions are exactly what they were."""

from __future__ import annotations

import numpy as np
import pytest

from securegaze.data.sources import load_gaze_data, synthetic_spec_style
from securegaze.data.synthetic import (
    CONDITIONS,
    SyntheticConfig,
    landmarks,
    render,
    sample_params,
    synthetic_style,
    with_condition_draws,
)
from securegaze.data.synthetic.contact_sheet import CONTACT_SHEET_CONDITION_ROWS
from securegaze.errors import ConfigError

SIZE = 48
#: Without blur (and with noise that depends only on the face), a pixel that a condition does not
#: touch keeps its exact value.
CLEAN = dict(size=SIZE, blur=(0.0, 0.0), noise=(0.0, 0.0))



def _render(conditions=(), params=None, trigger=None, n=6, **settings):
    cfg = synthetic_style("standard", **{**CLEAN, **settings}, conditions=tuple(conditions))
    params = sample_params(n, 5, cfg) if params is None else params
    return render(params, cfg, trigger).astype(np.float32), params


def _boxes(params, size, half=4, dy=0):
    """Per face, the (y0, y1, x0, x1) pixel boxes around both eye openings, shifted ``dy`` px down."""
    marks = landmarks(params, size)
    out = []
    for i in range(len(params)):
        boxes = []
        for eye in ("right_eye", "left_eye"):
            x, y = np.round(marks[eye][i]).astype(int)
            boxes.append((max(y + dy - half, 0), y + dy + half + 1, max(x - half, 0), x + half + 1))
        out.append(boxes)
    return out


def _region_diff(a, b, boxes) -> np.ndarray:
    """(N,) mean absolute difference of two renders inside each face's boxes."""
    return np.array([np.mean([np.abs(a[i, y0:y1, x0:x1] - b[i, y0:y1, x0:x1]).mean() for y0, y1, x0, x1 in face])
                     for i, face in enumerate(boxes)])


def _gaze_change(conditions) -> np.ndarray:
    """(N,) how much the eye regions change when only the gaze changes."""
    cfg = synthetic_style("standard", **CLEAN)
    params = sample_params(6, 5, cfg)
    up_left = params.replace(gaze=np.radians([20.0, 25.0]))
    down_right = params.replace(gaze=np.radians([-20.0, -25.0]))
    a, _ = _render(conditions, up_left)
    b, _ = _render(conditions, down_right)
    return _region_diff(a, b, _boxes(up_left, SIZE))


def test_conditions_leave_the_faces_without_them_as_they_were():
    """A face's own draws do not depend on the conditions (their draws come from a stream of their own),
    and a render without conditions does not read the condition draws at all: faces rendered before
    conditions existed come out the same. (Checked once against sha256 digests of renders made before
    the conditions were added, on the CPU they were made on; digests are not compared here because
    another CPU's vector maths may round the last bit of a pixel differently.)"""
    from dataclasses import fields

    for style, size in (("standard", 32), ("face_centred", 64), ("studio", 32)):
        plain_cfg = synthetic_style(style, size=size)
        assert plain_cfg.conditions == ()
        plain = sample_params(16, 3, plain_cfg)
        worn = sample_params(16, 3, synthetic_style(style, size=size, conditions=("night_ir", "sunglasses_dark")))
        for f in fields(plain):
            if f.name != "condition_draws":
                assert np.array_equal(getattr(plain, f.name), getattr(worn, f.name)), (style, f.name)
        other_draws = plain.replace(condition_draws=np.random.default_rng(1).random(plain.condition_draws.shape))
        assert np.array_equal(render(plain, plain_cfg), render(other_draws, plain_cfg)), style
        assert np.array_equal(render(plain, plain_cfg, "glasses"), render(other_draws, plain_cfg, "glasses")), style


def test_bad_condition_names_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"unknown cabin condition 'beard'; expected one of: .*night_ir"):
        SyntheticConfig(conditions=("beard",))
    with pytest.raises(ConfigError, match="at most one pair of glasses"):
        SyntheticConfig(conditions=("clear_glasses_thin", "sunglasses_dark"))
    with pytest.raises(ConfigError, match="given twice"):
        SyntheticConfig(conditions=("fringe", "fringe"))
    with pytest.raises(ConfigError, match="unknown cabin condition 'beard'"):
        synthetic_spec_style("synthetic:standard+beard")


@pytest.mark.parametrize("name", ["clear_glasses_thin", "clear_glasses_thick", "sunglasses_light"])
def test_eyes_behind_clear_and_light_lenses_still_follow_the_gaze(name):
    plain = _gaze_change(())
    seen = _gaze_change((name,))
    assert np.all(seen > 0.35 * plain), (seen, plain)


def test_dark_sunglasses_hide_the_gaze():
    plain = _gaze_change(())
    hidden = _gaze_change(("sunglasses_dark",))
    assert np.all(hidden < 0.15 * plain), (hidden, plain)
    # A near-infrared camera sees through their dyes.
    assert np.all(_gaze_change(("sunglasses_dark", "night_ir")) > 2 * hidden)


def test_light_sunglasses_darken_the_eyes():
    plain, params = _render()
    tinted, _ = _render(("sunglasses_light",))
    boxes = _boxes(params, SIZE)
    means = [np.mean([img[i, y0:y1, x0:x1].mean() for y0, y1, x0, x1 in face])
             for img in (plain, tinted) for i, face in enumerate(boxes)]
    assert np.mean(means[len(boxes):]) < 0.9 * np.mean(means[:len(boxes)])


def test_benign_glasses_do_not_look_like_the_trigger_glasses():
    plain, params = _render()
    trigger, _ = _render(trigger="glasses")
    boxes = _boxes(params, SIZE, half=9)
    trigger_change = _region_diff(trigger, plain, boxes)
    for name in ("clear_glasses_thin", "clear_glasses_thick"):
        benign, _ = _render((name,))
        assert np.all(_region_diff(benign, trigger, boxes) > 0.5 * trigger_change), name


def test_night_ir_is_grey_dark_and_noisy():
    plain, params = _render()
    night, _ = _render(("night_ir",))
    assert np.array_equal(night[..., 0], night[..., 1]) and np.array_equal(night[..., 1], night[..., 2])
    assert night.mean() < 0.8 * plain.mean()
    # Strong sensor noise: neighbouring pixels of the dark backdrop differ by far more than in daylight.
    corner = (slice(None), slice(0, 6), slice(0, 6), 0)
    assert np.abs(np.diff(night[corner], axis=2)).mean() > 2 * np.abs(np.diff(plain[corner], axis=2)).mean()


def test_night_ir_bright_pupil_glows_and_dark_pupil_does_not():
    cfg = synthetic_style("standard", size=64, blur=(0.0, 0.0), conditions=("night_ir",))
    params = sample_params(6, 5, cfg).replace(gaze=np.zeros(2))
    bright, dark = (render(with_condition_draws(params, "night_ir", pupil=pupil, headlight=1.0), cfg).astype(np.float32)
                    for pupil in (0.1, 0.9))
    glow = bright - dark
    assert glow.min() >= 0
    marks = landmarks(params, 64)
    at_pupils = np.zeros(glow.shape[:3], bool)
    for i in range(len(params)):
        for eye in ("right_pupil", "left_pupil"):
            x, y = np.round(marks[eye][i]).astype(int)
            assert glow[i, y - 2:y + 3, x - 2:x + 3].max() > 80
            at_pupils[i, y - 3:y + 4, x - 3:x + 4] = True
    assert np.all(glow[~at_pupils] == 0)


def test_headlight_sweep_position_is_a_per_sample_parameter():
    cfg = synthetic_style("standard", **CLEAN, conditions=("night_ir",))
    params = sample_params(3, 5, cfg)
    frames = [render(with_condition_draws(params, "night_ir", headlight=0.0, headlight_position=t), cfg)
              for t in (0.3, 0.7)]
    assert np.abs(frames[0].astype(np.float32) - frames[1]).mean() > 5
    off = [render(with_condition_draws(params, "night_ir", headlight=0.9, headlight_position=t), cfg) for t in (0.3, 0.7)]
    assert np.array_equal(off[0], off[1])
    with pytest.raises(ConfigError, match="no draw 'speed'"):
        with_condition_draws(params, "night_ir", speed=0.5)


def test_mask_covers_the_lower_face_and_leaves_the_eyes():
    plain, params = _render()
    masked, _ = _render(("face_mask",))
    marks = landmarks(params, SIZE)
    for i in range(len(params)):
        x, y = np.round(marks["mouth"][i]).astype(int)
        assert np.abs(masked[i, y - 2:y + 3, x - 4:x + 5] - plain[i, y - 2:y + 3, x - 4:x + 5]).mean() > 10
    assert np.all(_region_diff(masked, plain, _boxes(params, SIZE)) == 0)


@pytest.mark.parametrize("name", ["fringe", "hat_brim"])
def test_fringe_and_hat_change_the_brows_and_leave_the_mouth(name):
    plain, params = _render()
    covered, _ = _render((name,))
    brow_shift = -round(0.2 * SIZE / 2)  # ~0.2 head units above the eyes
    assert np.all(_region_diff(covered, plain, _boxes(params, SIZE, half=3, dy=brow_shift)) > 8)
    marks = landmarks(params, SIZE)
    for i in range(len(params)):
        x, y = np.round(marks["mouth"][i]).astype(int)
        assert np.array_equal(covered[i, y - 2:y + 3, x - 4:x + 5], plain[i, y - 2:y + 3, x - 4:x + 5])


def test_combinations_draw_in_a_fixed_order_whatever_the_order_given():
    a, params = _render(("fringe", "face_mask"))
    b, _ = _render(("face_mask", "fringe"))
    assert np.array_equal(a, b)
    assert SyntheticConfig(conditions=("night_ir", "clear_glasses_thin")).conditions == ("clear_glasses_thin", "night_ir")
    glasses_night, _ = _render(("night_ir", "clear_glasses_thin"))
    night, _ = _render(("night_ir",))
    assert np.array_equal(glasses_night[..., 0], glasses_night[..., 2])
    assert np.all(_region_diff(glasses_night, night, _boxes(params, SIZE, half=9)) > 1)
    mask_only, _ = _render(("face_mask",))
    assert not np.array_equal(a, mask_only)


def test_a_face_looks_the_same_in_any_batch_and_seed_stream():
    names = ("face_mask", "fringe", "hat_brim", "sunglasses_light", "night_ir")
    cfg = synthetic_style("standard", size=32, conditions=names)
    params = sample_params(40, 9, cfg)
    whole = render(params, cfg)
    assert np.array_equal(render(params.take([33, 2]), cfg), whole[[33, 2]])
    assert np.array_equal(render(sample_params(3, 9, cfg, start=20), cfg), whole[20:23])
    assert np.array_equal(render(sample_params(40, 9, cfg), cfg), whole)


def test_data_spec_names_conditions():
    assert synthetic_spec_style("synthetic:face_centred+face_mask+night_ir") == "face_centred"
    data = load_gaze_data("synthetic:standard+night_ir", 32, 3)
    assert np.array_equal(data.images[..., 0], data.images[..., 1])


def test_contact_sheet_shows_every_condition():
    shown = {name for _, conditions, _ in CONTACT_SHEET_CONDITION_ROWS for name in conditions}
    assert shown == set(CONDITIONS.names())


def test_a_condition_mix_gives_each_face_one_entry_by_its_own_draw():
    """``synthetic:STYLE+mix:NAME``: each face wears one entry of the mix, picked by its own condition
    draw, so a face renders as that entry alone would render it, in any batch."""
    from securegaze.data.synthetic.condition_names import CONDITION_MIXES, check_mix
    from securegaze.data.synthetic.render import mix_groups

    cfg = synthetic_style("standard", size=32, condition_mix="cabin")
    params = sample_params(400, 3, cfg)
    groups = mix_groups(params, "cabin")
    entries = check_mix("cabin")
    assert set(groups.tolist()) == set(range(len(entries)))  # 400 faces reach every entry
    weights = np.array([w for _, w in entries])
    shares = np.bincount(groups, minlength=len(entries)) / len(groups)
    assert np.abs(shares - weights / weights.sum()).max() < 0.06
    whole = render(params, cfg)
    for g in (0, int(np.argmax([("night_ir" in c) for c, _ in entries]))):
        idx = np.flatnonzero(groups == g)[:3]
        alone = render(params.take(idx), synthetic_style("standard", size=32, conditions=entries[g][0]))
        assert np.array_equal(whole[idx], alone)
    assert np.array_equal(render(params.take([7, 300]), cfg), whole[[7, 300]])
    assert set(CONDITION_MIXES) >= {"cabin"}
    data = load_gaze_data("synthetic:face_centred+mix:cabin", 32, 3)
    assert len(data) == 3


@pytest.mark.parametrize("spec, needle", [
    ("synthetic:standard+mix:everything", "unknown condition mix 'everything'"),
    ("synthetic:standard+mix:cabin+mix:cabin", "one condition mix at most"),
    ("synthetic:standard+night_ir+mix:cabin", "conditions or a condition mix, not both"),
])
def test_bad_mixes_are_refused_in_one_line(spec, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        synthetic_spec_style(spec)
    assert "\n" not in str(info.value) and spec in str(info.value)
    with pytest.raises(ConfigError, match="not both"):
        SyntheticConfig(conditions=("fringe",), condition_mix="cabin")
