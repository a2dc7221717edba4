import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from securegaze import geometry as g

angles = st.tuples(
    st.floats(min_value=-1.4, max_value=1.4), st.floats(min_value=-3.0, max_value=3.0)
)


@given(angles)
def test_pitchyaw_vector_round_trip(py):
    py = np.array(py)
    v = g.pitchyaw_to_vector(py)
    assert np.isclose(np.linalg.norm(v), 1.0)
    np.testing.assert_allclose(g.vector_to_pitchyaw(v), py, atol=1e-9)


def test_known_directions():
    # Straight into the camera, up (y is down in the camera frame), and to the image's left.
    np.testing.assert_allclose(g.pitchyaw_to_vector([0, 0]), [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(g.pitchyaw_to_vector([np.pi / 2, 0]), [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(g.pitchyaw_to_vector([0, np.pi / 2]), [-1, 0, 0], atol=1e-12)


def test_angular_error_known_values():
    assert g.angular_error_deg([0, 0], [0, 0]) == pytest.approx(0.0, abs=1e-6)
    assert g.angular_error_deg([0, 0], [0, np.deg2rad(10)]) == pytest.approx(10.0)
    assert g.angular_error_deg([np.deg2rad(5), 0], [np.deg2rad(-5), 0]) == pytest.approx(10.0)
    # Batched, and symmetric.
    a = np.deg2rad([[0, 0], [10, 20]])
    b = np.deg2rad([[0, 3], [10, 20]])
    np.testing.assert_allclose(g.angular_error_deg(a, b), [3.0, 0.0], atol=1e-6)


@given(angles, angles)
@settings(max_examples=50)
def test_angular_error_is_symmetric_and_matches_torch(a, b):
    a, b = np.array(a), np.array(b)
    e = g.angular_error_deg(a, b)
    assert e == pytest.approx(g.angular_error_deg(b, a), abs=1e-9)
    assert 0.0 <= e <= 180.0
    et = g.angular_error_deg_torch(torch.tensor(a), torch.tensor(b)).item()
    assert et == pytest.approx(e, abs=1e-6)


@given(angles)
def test_pitchyaw_rotation_maps_forward_to_gaze(py):
    r = g.pitchyaw_to_rotation(np.array(py))
    np.testing.assert_allclose(r @ np.array([0, 0, -1.0]), g.pitchyaw_to_vector(py), atol=1e-9)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)


@given(angles, st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1))
@settings(max_examples=50)
def test_rotate_gaze_round_trip(py, ax, ay, az):
    r = g.rotation_x(ax) @ g.rotation_y(ay) @ g.rotation_z(az)
    back = g.rotate_gaze(r.T, g.rotate_gaze(r, np.array(py)))
    assert g.angular_error_deg(back, np.array(py)) < 1e-6
