"""The synthetic driver: frames MediaPipe finds, and ground truth consistent with the normalisation."""

import numpy as np
import pytest

from edge_app.drive_scoring import check_drive
from edge_app.face import FaceMeshStage
from edge_app.head_pose import CameraIntrinsics, estimate_head_pose
from edge_app.normalisation import plan_normalisation
from edge_app.synthetic_driver import FULL_SCRIPT, SHORT_SCRIPT, SyntheticDriver, look_at_rotation
from edge_app.zones import load_zone_map
from securegaze.errors import ConfigError
from securegaze.geometry import angular_error_deg

ZONES = load_zone_map()


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_face_mesh_finds_the_synthetic_driver(seed):
    driver = SyntheticDriver(ZONES.targets_deg(), SHORT_SCRIPT, fps=2, seed=seed)
    frame, t, truth = driver.render_frame(7)  # 3.5 s: back on the road after the mirror check
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
    with FaceMeshStage(static_image_mode=True) as stage:
        face = stage.detect(frame)
    assert face is not None
    # The mesh's face-centre direction agrees with the script's face position within 2 degrees.
    pose = estimate_head_pose(face.points_px, CameraIntrinsics.approximate(640, 480))
    true_centre = driver.face_centre_at(t)
    cos = np.dot(pose.face_centre_mm, true_centre) / np.linalg.norm(pose.face_centre_mm) / np.linalg.norm(true_centre)
    assert np.degrees(np.arccos(min(cos, 1.0))) < 2.0


def test_ground_truth_is_the_camera_frame_gaze_the_normalisation_expects():
    # Normalising with the crop camera the frame was rendered from gives back that camera; the
    # oracle (the app's normalisation with the true head pose and face centre) puts the face centre
    # at the crop centre, and the default model on its crops is about as accurate as on its test
    # faces: the ground truth, the renderer's face framing and the normalisation share one convention.
    from edge_app.engines import create_engine
    from edge_app.synthetic_driver import oracle_gaze

    driver = SyntheticDriver(ZONES.targets_deg(), FULL_SCRIPT, fps=1, seed=1)
    cam = CameraIntrinsics.approximate(640, 480)
    engine = create_engine("onnxruntime", "models/default/model.onnx", "auto", 1)
    errors = []
    for i in range(0, driver.frame_count, 4):
        frame, t, truth = driver.render_frame(i)
        centre = driver.face_centre_at(t)
        r_c = look_at_rotation(centre, driver.roll_at(t))
        norm = plan_normalisation(centre, r_c.T, cam.matrix, 64)
        assert np.allclose(norm.rotation, r_c, atol=1e-9)
        # The true face centre lies on the face, within a few cm of the crop camera's look-at point.
        assert np.linalg.norm(truth.true_face_centre_mm - centre) < 60.0
        oracle = plan_normalisation(truth.true_face_centre_mm, truth.head_rotation, cam.matrix, 64)
        projected = oracle.warp @ cam.matrix @ truth.true_face_centre_mm
        assert np.allclose(projected[:2] / projected[2], 31.5, atol=1e-6)
        gaze = oracle_gaze(engine, frame, truth, cam.matrix, 600.0, 183.0)
        errors.append(float(angular_error_deg(gaze, np.array(truth.gaze))))
    assert np.mean(errors) < 4.0, errors  # the model's own error on its test faces is about 2.6 deg


def test_script_follows_the_zone_targets_and_checks_events():
    driver = SyntheticDriver(ZONES.targets_deg(), SHORT_SCRIPT, fps=10)
    gaze, head, k = driver.gaze_at(7.5)  # the middle of the phone glance
    assert SHORT_SCRIPT[k].zone == "phone_lap" and ZONES.classify(gaze) == "phone_lap"
    assert np.allclose(np.degrees(gaze), ZONES.targets_deg()["phone_lap"])
    obs_ok = [(t, "warning" if 9.0 <= t < 9.5 else "none", "eyes_off_road" if 9.0 <= t < 9.5 else None)
              for t in np.arange(0, driver.duration_s, 0.1)]
    results = {c.label: c.passed for c in check_drive(driver.script, driver.phase_starts, obs_ok)}
    assert results == {"mirror check 1 s": True, "phone on the lap 3 s": True}
    obs_bad = [(t, "warning" if 3.0 <= t < 3.4 else "none", "eyes_off_road" if 3.0 <= t < 3.4 else None)
               for t in np.arange(0, driver.duration_s, 0.1)]
    results = {c.label: c.passed for c in check_drive(driver.script, driver.phase_starts, obs_bad)}
    assert results == {"mirror check 1 s": False, "phone on the lap 3 s": False}
    # A run that stopped at 5 s judged the mirror check only.
    early = check_drive(driver.script, driver.phase_starts, [o for o in obs_ok if o[0] < 5.0])
    assert [(c.label, c.judged, c.passed) for c in early] == [("mirror check 1 s", True, True),
                                                              ("phone on the lap 3 s", False, False)]


def test_script_with_an_unknown_zone_is_refused():
    from edge_app.synthetic_driver import ScriptPhase

    with pytest.raises(ConfigError, match="sunroof"):
        SyntheticDriver(ZONES.targets_deg(), (ScriptPhase("sunroof", 1.0),))


def test_driver_wears_cabin_conditions_and_the_night_camera_sees_grey():
    """Conditions reach the driver's frames: none leaves them as they were, dark sunglasses change the
    face around the eyes only, night_ir makes the whole frame grey with a headlight sweep passing."""
    from edge_app.synthetic_driver import SWEEP_EVERY_S, SWEEP_S

    targets = load_zone_map().targets_deg()
    plain = SyntheticDriver(targets, SHORT_SCRIPT, fps=10, seed=1)
    same = SyntheticDriver(targets, SHORT_SCRIPT, fps=10, seed=1, conditions=())
    assert np.array_equal(plain.render_frame(3)[0], same.render_frame(3)[0])
    shades = SyntheticDriver(targets, SHORT_SCRIPT, fps=10, seed=1, conditions=("sunglasses_dark",))
    a, b = plain.render_frame(3)[0].astype(int), shades.render_frame(3)[0].astype(int)
    changed = np.argwhere(np.abs(a - b).max(axis=2) > 40)
    assert len(changed) > 200
    # The lenses sit at eye height: the changed rows are a band, not the whole face.
    assert np.ptp(changed[:, 0]) < 0.5 * np.ptp(changed[:, 1]) + 40
    night = SyntheticDriver(targets, SHORT_SCRIPT, fps=10, seed=1, conditions=("night_ir",))
    dark = night.render_frame(int(round((SWEEP_S + 1.0) * 10)))[0]
    swept = night.render_frame(int(round((SWEEP_EVERY_S + 0.5 * SWEEP_S) * 10)))[0]
    assert np.array_equal(dark[..., 0], dark[..., 1]) and np.array_equal(dark[..., 1], dark[..., 2])
    assert dark.mean() < a.mean()
    assert swept.astype(float).mean() > dark.astype(float).mean() + 1.0
    with pytest.raises(ConfigError, match="unknown cabin condition 'beard'"):
        SyntheticDriver(targets, SHORT_SCRIPT, fps=10, seed=1, conditions=("beard",))
