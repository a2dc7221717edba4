"""Head pose and normalisation: round trips, roll removal, and the warp against projection."""

import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_app.head_pose import POSE_MODEL_MM, CameraIntrinsics, estimate_head_pose
from edge_app.normalisation import normalisation_rotation, normalised_camera_matrix, plan_normalisation
from edge_app.synthetic_driver import look_at_rotation
from securegaze.errors import ConfigError, InputFileError
from securegaze.geometry import angular_error_deg, pitchyaw_to_rotation, rotation_z

angles = st.floats(-0.6, 0.6)


def _head_rotation(pitch, yaw, roll):
    return pitchyaw_to_rotation(np.array([pitch, yaw])) @ rotation_z(roll)


@settings(max_examples=60, deadline=None)
@given(angles, angles, st.floats(-0.4, 0.4), st.floats(-150, 150), st.floats(-100, 100), st.floats(400, 1200),
       st.floats(-0.7, 0.7), st.floats(-0.7, 0.7))
def test_gaze_normalise_then_denormalise_is_identity(hp, hy, hr, x, y, z, gp, gy):
    norm = plan_normalisation(np.array([x, y, z]), _head_rotation(hp, hy, hr),
                              CameraIntrinsics.approximate(640, 480).matrix, 64)
    gaze = np.array([gp, gy])
    back = norm.gaze_to_camera(norm.gaze_to_normalised(gaze))
    assert float(angular_error_deg(back, gaze)) < 1e-6
    assert np.allclose(norm.rotation @ norm.rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(norm.rotation) == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(angles, angles, st.floats(-0.4, 0.4), st.floats(-150, 150), st.floats(-100, 100), st.floats(400, 1200))
def test_normalised_camera_looks_at_the_face_and_removes_roll(hp, hy, hr, x, y, z):
    centre = np.array([x, y, z])
    head = _head_rotation(hp, hy, hr)
    r = normalisation_rotation(centre, head)
    # z axis through the face centre; the head's x axis has no component along the new y (no roll).
    assert np.allclose(r @ centre, [0, 0, np.linalg.norm(centre)], atol=1e-9)
    assert abs(float((r @ head[:, 0])[1])) < 1e-9


def test_warp_maps_a_point_where_the_normalised_camera_sees_it():
    k = CameraIntrinsics.approximate(640, 480).matrix
    centre = np.array([60.0, -40.0, 650.0])
    norm = plan_normalisation(centre, _head_rotation(0.1, -0.2, 0.15), k, 64, distance_mm=600, crop_width_mm=183)
    c_n = normalised_camera_matrix(64, 600, 183)
    for offset in ([0, 0, 0], [30, -20, 10], [-40, 35, -15]):
        point = centre + np.array(offset, float)
        pixel = k @ point
        warped = norm.warp @ pixel
        # In the normalised camera: rotated, then moved to 600 mm along its axis (scaled z).
        expected = c_n @ (np.diag([1, 1, 600 / np.linalg.norm(centre)]) @ norm.rotation @ point)
        assert np.allclose(warped[:2] / warped[2], expected[:2] / expected[2], atol=1e-6)
    # The face centre lands on the crop's centre pixel.
    centre_px = norm.warp @ (k @ centre)
    assert np.allclose(centre_px[:2] / centre_px[2], [31.5, 31.5], atol=1e-9)


def test_head_pose_recovers_a_known_pose_exactly():
    cam = CameraIntrinsics.approximate(640, 480)
    rotation = _head_rotation(math.radians(10), math.radians(-25), math.radians(8))
    translation = np.array([40.0, -30.0, 700.0])
    projected, _ = cv2.projectPoints(POSE_MODEL_MM, cv2.Rodrigues(rotation)[0], translation, cam.matrix, None)
    landmarks = np.zeros((478, 2))
    from edge_app.head_pose import POSE_LANDMARKS

    landmarks[POSE_LANDMARKS] = projected.reshape(-1, 2)
    pose = estimate_head_pose(landmarks, cam)
    assert np.allclose(pose.rotation, rotation, atol=1e-5)
    assert np.allclose(pose.translation_mm, translation, atol=1e-2)
    assert pose.reprojection_error_px < 1e-3
    pitch, yaw, roll = pose.euler_deg()
    # The face turned 25 deg towards the image's right (negative yaw) and rolled 8 deg.
    assert yaw == pytest.approx(-25, abs=1.5) and roll == pytest.approx(8, abs=1.5)


def test_look_at_rotation_matches_the_normalisation_for_an_unrolled_head():
    centre = np.array([35.0, -20.0, 700.0])
    r_c = look_at_rotation(centre, roll=0.1)
    assert np.allclose(normalisation_rotation(centre, r_c.T), r_c, atol=1e-9)


def test_intrinsics_from_yaml_and_its_errors(tmp_path):
    good = tmp_path / "cam.yaml"
    good.write_text("image_width: 1280\nimage_height: 720\ncamera_matrix: [[1000, 0, 640], [0, 1000, 360], [0, 0, 1]]\n"
                    "distortion_coefficients: [0.1, -0.05, 0, 0, 0]\n")
    cam = CameraIntrinsics.from_yaml(good)
    assert (cam.fx, cam.cx, cam.width) == (1000.0, 640.0, 1280)
    half = cam.for_frame(640, 360)
    assert (half.fx, half.cx, half.cy) == (500.0, 320.0, 180.0)
    with pytest.raises(ConfigError, match="different aspect ratio"):
        cam.for_frame(640, 480)
    bad = tmp_path / "bad.yaml"
    bad.write_text("image_width: 640\nimage_height: 480\ncamera_matrix: [[1, 2], [3, 4]]\n")
    with pytest.raises(ConfigError, match="bad.yaml: camera_matrix must be 3x3"):
        CameraIntrinsics.from_yaml(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("image_width: 640\nimage_height: 480\ncamera_matrx: []\n")
    with pytest.raises(ConfigError, match="unknown key"):
        CameraIntrinsics.from_yaml(typo)
    with pytest.raises(InputFileError, match="not found"):
        CameraIntrinsics.from_yaml(tmp_path / "none.yaml")


def test_the_example_calibration_file_reads():
    from pathlib import Path

    cam = CameraIntrinsics.from_yaml(Path(__file__).resolve().parent.parent / "calibration" / "camera_example.yaml")
    assert cam.width == 640 and cam.fx > 0
