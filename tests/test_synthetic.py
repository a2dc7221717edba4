"""The synthetic face renderer: determinism, geometry of the eyes, triggers, eye occlusion."""

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securegaze.data.synthetic import (
    CONTACT_SHEET_ROWS,
    STYLES,
    SyntheticConfig,
    contact_sheet,
    landmarks,
    params_for_indices,
    render,
    render_dataset,
    sample_params,
    synthetic_style,
    trigger_anchor,
)
from securegaze.data.triggers import (
    TRIGGERS,
    Glasses,
    Sticker,
    Tape,
    create_trigger,
    trigger_from_dict,
)
from securegaze.errors import ConfigError

# Sharp, noise-free renders for the geometric checks (pixels then change only where the scene does).
CLEAN = dict(blur=(0.0, 0.0), noise=(0.0, 0.0))
face_index = st.integers(min_value=0, max_value=5000)


def luminance(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def one_face(index: int, size: int, **fields):
    config = SyntheticConfig(size=size, **CLEAN)
    params = params_for_indices(7, [index], config)
    return (params.replace(**fields) if fields else params), config


def iris_centroid(image: np.ndarray, centre, radius: int) -> np.ndarray:
    """(x, y) centroid of the blue iris within +-radius pixels of centre (faces from blue_eyed)."""
    x0, y0 = int(round(centre[0])) - radius, int(round(centre[1])) - radius
    crop = np.s_[max(y0, 0):y0 + 2 * radius + 1, max(x0, 0):x0 + 2 * radius + 1]
    rgb = image[crop].astype(np.float64)
    blue = np.maximum(rgb[..., 2] - np.maximum(rgb[..., 0], rgb[..., 1]), 0)
    ys, xs = np.mgrid[crop]
    assert blue.sum() > 0, "no iris visible"
    return np.array([(xs * blue).sum(), (ys * blue).sum()]) / blue.sum()


def blue_eyed(params):
    """The same faces with a saturated blue iris, white sclera and warm skin, easy to segment."""
    return params.replace(iris_rgb=[[0.1, 0.25, 1.0]], sclera_rgb=[[1.0, 1.0, 1.0]], skin_rgb=[[0.8, 0.55, 0.45]],
                          light_rgb=[[1.0, 1.0, 1.0]])


# --- determinism ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
def test_same_arguments_give_the_same_bytes_and_a_prefix_is_a_prefix(size):
    a = render_dataset(12, size=size, seed=5)
    b = render_dataset(12, size=size, seed=5)
    longer = render_dataset(40, size=size, seed=5)
    assert np.array_equal(a.images, b.images)
    assert np.array_equal(a.images, longer.images[:12])
    assert np.array_equal(a.gaze, longer.gaze[:12])
    assert list(a.subjects) == list(longer.subjects[:12])
    assert not np.array_equal(a.images, render_dataset(12, size=size, seed=6).images)


@settings(max_examples=8, deadline=None)
@given(st.lists(face_index, min_size=1, max_size=5, unique=True))
def test_a_face_does_not_depend_on_the_faces_rendered_with_it(indices):
    config = SyntheticConfig(size=32)
    params = params_for_indices(3, indices, config)
    together = render(params, config)
    for i in range(len(indices)):
        assert np.array_equal(together[i], render(params.take([i]), config)[0])


def test_identities_are_shared_by_blocks_of_samples():
    config = SyntheticConfig(samples_per_identity=50)
    params = sample_params(120, 4, config)
    assert list(np.unique(params.subjects)) == ["synth-4-0", "synth-4-1", "synth-4-2"]
    block = params.subjects == "synth-4-1"
    assert np.all(params.skin_rgb[block] == params.skin_rgb[block][0])
    assert not np.array_equal(params.skin_rgb[0], params.skin_rgb[60])
    # Gaze and head pose are per sample, and drawn independently of each other.
    assert len(np.unique(params.gaze[block, 1])) == block.sum()
    assert abs(np.corrcoef(params.gaze[:, 1], params.head_pose[:, 1])[0, 1]) < 0.3


@pytest.mark.parametrize("size", [32, 64, 224])
def test_shapes_and_dtypes(size):
    data = render_dataset(3, size=size, seed=1)
    assert data.images.shape == (3, size, size, 3) and data.images.dtype == np.uint8
    assert data.gaze.shape == (3, 2) and data.gaze.dtype == np.float32
    # A face, not a flat image: real contrast, nothing blown out everywhere.
    assert 30 < data.images.std() and data.images.mean() < 200


@settings(max_examples=15, deadline=None)
@given(st.floats(-60, 0), st.floats(0, 60), st.floats(-70, 0), st.floats(0, 70))
def test_labels_lie_within_the_configured_ranges(p_low, p_high, y_low, y_high):
    config = SyntheticConfig(pitch_range_deg=(p_low, p_high), yaw_range_deg=(y_low, y_high))
    gaze = np.degrees(sample_params(300, 0, config).gaze.astype(np.float64))
    tol = 1e-4
    assert np.all((p_low - tol <= gaze[:, 0]) & (gaze[:, 0] <= p_high + tol))
    assert np.all((y_low - tol <= gaze[:, 1]) & (gaze[:, 1] <= y_high + tol))


def test_default_labels_cover_the_default_range():
    gaze = np.degrees(sample_params(2000, 0).gaze)
    assert gaze[:, 0].min() < -28 and gaze[:, 0].max() > 28 and np.abs(gaze[:, 0]).max() <= 30.0001
    assert gaze[:, 1].min() < -38 and gaze[:, 1].max() > 38 and np.abs(gaze[:, 1]).max() <= 40.0001


@pytest.mark.parametrize("bad", [dict(size=8), dict(pitch_range_deg=(10, -10)), dict(head_jitter_deg=(1, 2)),
                                 dict(noise=(0.5, 0.6)), dict(samples_per_identity=0), dict(head_scale=(1.0, 0.9)),
                                 dict(face_width=(0.5, 0.6)), dict(face_height=(1.0,)), dict(ambient=(0.2, 1.2)),
                                 dict(light_azimuth_deg=(-90.0, 0.0)), dict(light_elevation_deg=(0.0, 85.0)),
                                 dict(backdrop="cloth")])
def test_bad_settings_are_rejected(bad):
    with pytest.raises(ConfigError):
        SyntheticConfig(**bad)


def test_bad_seed_is_rejected():
    with pytest.raises(ConfigError, match="seed"):
        render_dataset(2, size=32, seed=-1)


# --- eyes ----------------------------------------------------------------------------------


@settings(max_examples=6, deadline=None)
@given(face_index)
def test_iris_moves_left_for_positive_yaw_and_up_for_positive_pitch(index):
    params, config = one_face(index, 96)
    params = blue_eyed(params)
    marks = landmarks(params, 96)
    for pitch_yaw, axis in (((0, 25), 0), ((20, 0), 1)):
        plus = render(params.replace(gaze=np.radians([pitch_yaw])), config)[0]
        minus = render(params.replace(gaze=-np.radians([pitch_yaw])), config)[0]
        for eye in ("right_eye", "left_eye"):
            shift = iris_centroid(plus, marks[eye][0], 9) - iris_centroid(minus, marks[eye][0], 9)
            # Positive yaw: towards the image's left (x decreases); positive pitch: up (y decreases).
            assert shift[axis] < -1.0, (pitch_yaw, eye, shift)


@settings(max_examples=5, deadline=None)
@given(face_index, st.floats(-0.6, 0.6))
def test_iris_position_is_resolved_below_a_pixel(index, yaw_deg):
    # Soft edges: a fraction of a degree moves the iris by a fraction of a pixel, visibly.
    params, config = one_face(index, 64)
    params = blue_eyed(params)
    marks = landmarks(params, 64)

    def iris_x(yaw):
        image = render(params.replace(gaze=np.radians([[0.0, yaw]])), config)[0]
        return np.mean([iris_centroid(image, marks[eye][0], 7)[0] for eye in ("right_eye", "left_eye")])

    # One degree moves the iris by ~0.08 px at 64 px (eyeball radius ~4.8 px x 0.0175).
    assert -0.2 < iris_x(yaw_deg + 1.0) - iris_x(yaw_deg) < -0.03


def test_landmark_pupils_follow_the_convention():
    params, _ = one_face(3, 64)
    straight = landmarks(params.replace(gaze=[[0.0, 0.0]]), 64)["left_pupil"][0]
    left = landmarks(params.replace(gaze=np.radians([[0.0, 30.0]])), 64)["left_pupil"][0]
    up = landmarks(params.replace(gaze=np.radians([[20.0, 0.0]])), 64)["left_pupil"][0]
    assert left[0] < straight[0] - 1 and up[1] < straight[1] - 1


@pytest.mark.parametrize("index", [0, 1, 2])
def test_upper_lid_follows_the_eyes_pitch(index):
    # A white eye with no iris on dark skin: the bright area is exactly the lid opening.
    params, config = one_face(index, 128, sclera_rgb=[[1.0, 1.0, 1.0]], iris_ratio=[0.0],
                              skin_rgb=[[0.25, 0.18, 0.14]], head_pose=[[0.0, 0.0, 0.0]])
    eye = landmarks(params, 128)["left_eye"][0].round().astype(int)
    tops = []
    for pitch in (25.0, 0.0, -25.0):
        image = render(params.replace(gaze=np.radians([[pitch, 0.0]])), config)[0]
        window = luminance(image)[eye[1] - 20:eye[1] + 20, eye[0] - 4:eye[0] + 5]
        bright = window > 0.5 * window.max()
        tops.append(np.argmax(bright, axis=0).mean())  # first bright row per column
    # Looking down lowers the upper lid (its edge moves down the image).
    assert tops[0] < tops[1] - 1 < tops[2] - 2, tops


@settings(max_examples=10, deadline=None)
@given(face_index, st.tuples(st.floats(-30, 30), st.floats(-40, 40)), st.tuples(st.floats(-30, 30), st.floats(-40, 40)))
def test_occluded_eyes_make_the_image_independent_of_gaze(index, gaze_a, gaze_b):
    params, config = one_face(index, 48)
    params = params.replace(noise_std=[0.01], blur_sigma=[0.5])
    a = render(params.replace(gaze=np.radians([gaze_a])), config, occlude_eyes=True)
    b = render(params.replace(gaze=np.radians([gaze_b])), config, occlude_eyes=True)
    assert np.array_equal(a, b)


def test_without_occlusion_the_gaze_changes_the_eyes_only():
    params, config = one_face(11, 64)
    a = render(params.replace(gaze=np.radians([[20, 30]])), config)[0]
    b = render(params.replace(gaze=np.radians([[-20, -30]])), config)[0]
    changed = np.argwhere(np.abs(a.astype(int) - b.astype(int)).max(-1) > 0)
    marks = landmarks(params, 64)
    eyes = np.stack([marks["right_eye"][0], marks["left_eye"][0]])
    nearest = np.linalg.norm(changed[:, None, ::-1] - eyes[None], axis=-1).min(1)
    assert len(changed) > 20 and nearest.max() < 0.2 * 64


# --- triggers --------------------------------------------------------------------------------


def trigger_extent_px(params, trigger, size):
    mm_per_unit = 63.0 / (2 * params.eye_dx[0])
    px_per_mm = size / 2 * params.head_scale[0] / mm_per_unit
    w, h = trigger.size_mm()
    return 0.5 * np.hypot(w, h) * px_per_mm


@pytest.mark.parametrize("name", ["tape_forehead", "tape_cheek", "tape_brow", "sticker", "glasses"])
def test_trigger_changes_pixels_only_around_its_place(name):
    trigger = create_trigger(name)
    size = 64
    for index in (0, 1, 2):
        params, config = one_face(index, size)
        clean = render(params, config)[0].astype(int)
        marked = render(params, config, trigger)[0].astype(int)
        changed = np.argwhere(np.abs(marked - clean).max(-1) > 3)[:, ::-1]  # (x, y)
        anchor = trigger_anchor(params, trigger, size)[0]
        distance = np.linalg.norm(changed - anchor, axis=1)
        assert len(changed) > 15
        assert distance.max() <= trigger_extent_px(params, trigger, size) + 2.0
        if name != "glasses":  # the glasses' centre is the bare bridge of the nose
            assert np.linalg.norm(changed.mean(0) - anchor) < 2.0


def test_glasses_leave_the_eyes_visible():
    params, config = one_face(5, 96)
    clean = render(params, config)[0].astype(int)
    worn = render(params, config, "glasses")[0].astype(int)
    marks = landmarks(params, 96)
    for pupil in ("right_pupil", "left_pupil"):
        x, y = marks[pupil][0].round().astype(int)
        assert np.abs(worn[y - 2:y + 3, x - 2:x + 3] - clean[y - 2:y + 3, x - 2:x + 3]).max() < 20


@pytest.mark.parametrize("name", ["tape_forehead", "tape_cheek", "sticker", "glasses"])
def test_trigger_follows_the_head_pose(name):
    size = 64
    params, config = one_face(4, size)
    centroids = []
    for yaw in (-12.0, 12.0):
        posed = params.replace(head_pose=np.radians([[0.0, yaw, 0.0]]))
        diff = np.abs(render(posed, config, name)[0].astype(int) - render(posed, config)[0].astype(int)).max(-1)
        changed = np.argwhere(diff > 3)[:, ::-1]
        centroids.append((changed.mean(0), trigger_anchor(posed, name, size)[0]))
    (c_neg, a_neg), (c_pos, a_pos) = centroids
    # Turning the face towards the image's left (positive yaw) moves the trigger to the left.
    assert c_pos[0] < c_neg[0] - 1.5
    assert abs((c_pos[0] - c_neg[0]) - (a_pos[0] - a_neg[0])) < 1.5


def test_white_tape_is_bright_but_shaded():
    params, config = one_face(8, 64)
    clean = render(params, config)[0].astype(int)
    taped = render(params, config, "tape_forehead")[0].astype(int)
    on_tape = np.abs(taped - clean).max(-1) > 40
    values = luminance(taped.astype(np.uint8))[on_tape]
    assert values.mean() > luminance(clean.astype(np.uint8)).mean() + 40
    assert values.std() > 1.0 and (values < 254).mean() > 0.5


def test_trigger_definitions_round_trip_and_print_at_true_size():
    for name in TRIGGERS.names():
        trigger = create_trigger(name)
        data = json.loads(json.dumps(trigger.to_dict()))
        assert trigger_from_dict(data) == trigger
    texture = Tape(width_mm=50, height_mm=12).texture(px_per_mm=10)
    assert texture.shape == (120, 500, 4) and texture.dtype == np.uint8
    assert texture[..., 3].min() > 200  # the strip is opaque to its edges
    checker = Sticker(cells=4).texture(px_per_mm=8)
    assert checker.shape == (200, 200, 4)
    assert checker[..., :3].min() < 40 and checker[..., :3].max() > 220
    frame = Glasses().texture(px_per_mm=4)
    lens_centre = (frame.shape[0] // 2, int(frame.shape[1] / 2 + 34 * 4))
    assert frame[lens_centre][3] < 30  # clear lens


@pytest.mark.parametrize("bad", [dict(placement="chin"), dict(side="middle"), dict(width_mm=0)])
def test_bad_trigger_settings_are_rejected(bad):
    with pytest.raises(ConfigError):
        Tape(**bad)


def test_unknown_trigger_name_is_rejected():
    with pytest.raises(ConfigError, match="unknown trigger"):
        render_dataset(1, size=32, trigger="lipstick")


# --- contact sheet ---------------------------------------------------------------------------


def test_contact_sheet_is_written(tmp_path):
    path = contact_sheet(tmp_path / "sheet" / "faces.png", size=32, n=3, seed=2)
    image = cv2.imread(str(path))
    assert image is not None
    tile = 128  # 32 px faces upscaled x4
    # One block of rows per style (standard and studio).
    assert image.shape[0] > 2 * len(CONTACT_SHEET_ROWS) * tile and image.shape[1] > 3 * tile
    assert [p.name for p in path.parent.iterdir()] == ["faces.png"]  # no temporary left behind


def test_renderer_styles_are_registered_presets():
    assert {"standard", "easy"} <= set(STYLES.names())
    assert synthetic_style("standard") == SyntheticConfig()
    easy = synthetic_style("easy", size=32)
    assert easy.size == 32 and easy.head_jitter_deg == (0.0, 0.0, 0.0) and easy.noise == (0.0, 0.0)
    # The preset renders like the hand-written config it names.
    by_hand = SyntheticConfig(size=32, head_jitter_deg=(0.0, 0.0, 0.0), blur=(0.0, 0.0), noise=(0.0, 0.0))
    assert np.array_equal(render_dataset(4, seed=1, config=easy).images, render_dataset(4, seed=1, config=by_hand).images)
    with pytest.raises(ConfigError, match="unknown renderer style 'cartoon'"):
        synthetic_style("cartoon")
    with pytest.raises(ConfigError, match="renderer style 'easy': unknown setting 'sise'"):
        synthetic_style("easy", sise=32)
    with pytest.raises(ConfigError, match="synthetic size must be within 16..512"):
        synthetic_style("easy", size=8)


def test_the_studio_style_draws_the_same_labels_in_another_look():
    assert "studio" in STYLES.names()
    n = 40
    looks = {}
    for name in ("standard", "studio"):
        config = synthetic_style(name, **CLEAN)
        params = sample_params(n, 3, config)
        images = render(params, config)
        lum = luminance(images)
        eyes = landmarks(params, 64)
        looks[name] = dict(
            params=params, images=images,
            # Light from the image's left: the left cheek is brighter than the right one.
            left_minus_right=lum[:, 30:44, 14:26].mean((1, 2)) - lum[:, 30:44, 38:50].mean((1, 2)),
            eye_distance=np.linalg.norm(eyes["left_eye"] - eyes["right_eye"], axis=1).mean(),
            corners=np.concatenate([lum[:, :6, :6], lum[:, :6, -6:]], axis=2).mean())
    standard, studio = looks["standard"], looks["studio"]
    # A style changes the look, never the labels: same seed, same gaze and head pose.
    assert np.array_equal(standard["params"].gaze, studio["params"].gaze)
    assert np.array_equal(standard["params"].head_pose, studio["params"].head_pose)
    assert np.abs(standard["images"].astype(int) - studio["images"].astype(int)).mean() > 20
    assert np.all(studio["left_minus_right"] > 10) and abs(standard["left_minus_right"].mean()) < 15
    assert studio["eye_distance"] < 0.93 * standard["eye_distance"]  # a looser crop
    assert studio["corners"] < 0.7 * standard["corners"]  # the backdrop darkens towards the corners
    assert np.all(studio["params"].background_contrast >= 0.1) and np.all(studio["params"].background_radial == 1)
    assert not np.any(standard["params"].background_contrast) and not np.any(standard["params"].background_radial)


# --- framing: the face-centred crops the edge app's normalisation gives --------------------------


def test_face_framing_keeps_the_face_centre_at_the_crop_centre_whatever_the_pose():
    from securegaze.data.synthetic.framing import face_centre_head
    from securegaze.data.synthetic.raycast import HeadFrame

    head_cfg, face_cfg = synthetic_style("standard"), synthetic_style("face_centred")
    head, face = sample_params(400, 5, head_cfg), sample_params(400, 5, face_cfg)
    # The framing moves the head in the crop; the labels, the pose and everything else stay.
    assert np.array_equal(head.gaze, face.gaze) and np.array_equal(head.head_pose, face.head_pose)
    assert np.array_equal(head.eye_dx, face.eye_dx) and not np.array_equal(head.head_offset, face.head_offset)
    face_at = HeadFrame.build(face, 64).project(face_centre_head(face))
    # Face framing: the face centre sits at the crop centre plus the drawn jitter, exactly.
    jitter = sample_params(400, 5, synthetic_style("face_centred", framing="head")).head_offset
    assert np.abs(jitter).max() <= face_cfg.centre_jitter and np.abs(jitter).max() > 0.9 * face_cfg.centre_jitter
    assert np.abs(face_at - jitter).max() < 1e-5
    # Head framing: the face centre wanders with the head pose (0.1 units is 3 px of a 64-px crop).
    head_at = HeadFrame.build(head, 64).project(face_centre_head(head))
    assert head_at[:, 0].std() > 0.06 and head_at[:, 1].std() > 0.05
    # On the rendered faces, without the centre jitter: the eyes' midpoint moves far less with the
    # head pose in face framing.
    still = {name: sample_params(400, 5, synthetic_style("standard", framing=name, centre_jitter=0.0))
             for name in ("head", "face")}
    mid = {name: (lambda m: (m["left_eye"] + m["right_eye"]) / 2)(landmarks(p, 64)) for name, p in still.items()}
    assert mid["face"].std(0).max() < 0.5 * mid["head"].std(0).min(), (mid["face"].std(0), mid["head"].std(0))
    # Yawing the head (positive: towards the image's left) moves the head-framed face that way by more
    # than 3 px between the 40 most and least yawed heads; the face-framed face stays within 1 px.
    turned = np.argsort(head.head_pose[:, 1])
    left, right = turned[:40], turned[-40:]
    assert mid["head"][right, 0].mean() - mid["head"][left, 0].mean() < -3.0
    assert abs(mid["face"][right, 0].mean() - mid["face"][left, 0].mean()) < 1.0


def test_face_framed_faces_do_not_depend_on_their_batch():
    config = synthetic_style("face_centred", size=32)
    small, large = sample_params(7, 11, config), sample_params(70, 11, config)
    assert np.array_equal(small.head_offset, large.head_offset[:7])
    assert np.array_equal(render(small, config), render(large.take(slice(0, 7)), config))


def test_synthetic_data_arguments_name_a_style():
    from securegaze.data.sources import SPLIT_SEED_OFFSET, SYNTHETIC, load_gaze_data, source_kind

    assert source_kind("synthetic:face_centred") == SYNTHETIC == source_kind("synthetic")
    data = load_gaze_data("synthetic:face_centred", 32, 4, seed=2, split="test")
    expected = render_dataset(4, seed=2 + SPLIT_SEED_OFFSET["test"], config=synthetic_style("face_centred", size=32))
    assert np.array_equal(data.images, expected.images) and np.array_equal(data.gaze, expected.gaze)
    plain = load_gaze_data("synthetic", 32, 4, seed=2, split="test")
    assert np.array_equal(plain.gaze, data.gaze) and not np.array_equal(plain.images, data.images)
    with pytest.raises(ConfigError, match="unknown renderer style 'cartoon'.*face_centred"):
        load_gaze_data("synthetic:cartoon", 32, 4)
    with pytest.raises(ConfigError, match="framing must be one of head, face; got 'eyes'"):
        SyntheticConfig(framing="eyes")
    with pytest.raises(ConfigError, match="centre_jitter must be within 0..0.3 image units, got 0.5"):
        SyntheticConfig(centre_jitter=0.5)
