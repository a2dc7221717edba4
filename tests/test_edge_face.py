"""The face stage on a real photograph (scikit-image's astronaut), and on frames with no face."""

import cv2
import numpy as np
import pytest

from edge_app.face import LEFT_IRIS_CENTRE, NUM_LANDMARKS, RIGHT_IRIS_CENTRE, FaceMeshStage
from edge_app.head_pose import CameraIntrinsics, estimate_head_pose
from edge_app.normalisation import plan_normalisation, warp_face

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (a dev dependency) supplies the photograph")


@pytest.fixture(scope="module")
def astronaut_bgr():
    return cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)  # 512 x 512, Eileen Collins


@pytest.fixture(scope="module")
def stage():
    with FaceMeshStage(static_image_mode=True) as s:
        yield s


def test_face_mesh_finds_the_astronaut_with_irises(stage, astronaut_bgr):
    face = stage.detect(astronaut_bgr)
    assert face is not None and face.points_px.shape == (NUM_LANDMARKS, 2)
    # Her face lies in the upper middle of the picture (x 150-300, y 60-260 px).
    centre = face.points_px[:468].mean(axis=0)
    assert 150 < centre[0] < 300 and 60 < centre[1] < 260
    # Each iris centre sits between its eye's corners, and the subject's right eye is on the image's left.
    for iris, (outer, inner) in ((RIGHT_IRIS_CENTRE, (33, 133)), (LEFT_IRIS_CENTRE, (263, 362))):
        x = face.points_px[iris, 0]
        lo, hi = sorted((face.points_px[outer, 0], face.points_px[inner, 0]))
        assert lo < x < hi
    assert face.points_px[RIGHT_IRIS_CENTRE, 0] < face.points_px[LEFT_IRIS_CENTRE, 0]
    assert 60 < face.face_width_px < 250


def test_head_pose_and_normalised_crop_of_the_astronaut(stage, astronaut_bgr):
    face = stage.detect(astronaut_bgr)
    cam = CameraIntrinsics.approximate(512, 512)
    pose = estimate_head_pose(face.points_px, cam)
    pitch, yaw, roll = pose.euler_deg()
    # She faces the camera, head slightly turned and tilted: no angle beyond 30 deg, a plausible
    # distance for a portrait, and the generic face fits her landmarks within a few pixels.
    assert abs(yaw) < 30 and abs(roll) < 30 and abs(pitch) < 35
    assert 200 < pose.translation_mm[2] < 1500
    assert pose.reprojection_error_px < 8
    norm = plan_normalisation(pose.face_centre_mm, pose.rotation, cam.matrix, 64)
    crop = warp_face(astronaut_bgr, norm)
    assert crop.shape == (64, 64, 3)
    # The crop is a face: running the mesh on an upscaled crop finds one, eyes in the upper half.
    with FaceMeshStage(static_image_mode=True) as again:
        found = again.detect(cv2.resize(crop, (256, 256), interpolation=cv2.INTER_CUBIC))
    assert found is not None
    eyes_y = found.iris_centres_px[:, 1].mean() / 256
    assert 0.2 < eyes_y < 0.55


def test_no_face_and_too_small_faces_are_reported_absent(astronaut_bgr):
    with FaceMeshStage(static_image_mode=True) as s:
        assert s.detect(np.full((480, 640, 3), 120, np.uint8)) is None
        assert s.last_rejection == "no face found"
    with FaceMeshStage(static_image_mode=True, min_face_width_px=400) as s:
        assert s.detect(astronaut_bgr) is None
        assert "low landmark confidence" in s.last_rejection
