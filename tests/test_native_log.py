"""MediaPipe's native start-up lines are kept off the terminal; every other line still gets there."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from securegaze.native_log import is_noise, quiet_native_start

STARTUP = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
           b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
           b"W0000 00:00:1796664265.060236   31014 inference_feedback_manager.cc:114] Feedback manager requires a "
           b"model with a single signature inference.\n")


def test_the_start_up_lines_go_and_the_others_stay(capfd):
    with quiet_native_start():
        os.write(2, STARTUP)
        os.write(2, b"E0000 00:00:1796664265.1 31014 graph.cc:9] a real failure\nplain line\n")
    err = capfd.readouterr().err
    assert "XNNPACK" not in err and "absl::InitializeLog" not in err and "Feedback manager" not in err
    assert "a real failure" in err and "plain line" in err
    assert is_noise("I0000 00:00:1.5 12 gl_context.cc:357] GL version") and not is_noise("error: x.png: unreadable")


def test_reading_a_folders_faces_prints_no_mediapipe_start_up(tmp_path, capfd):
    from skimage import data

    from securegaze.data.face_share import folder_face_share

    face = Image.fromarray(np.ascontiguousarray(data.astronaut()[0:200, 130:330]))
    for i, side in enumerate((96, 128, 160)):
        face.resize((side, side)).save(tmp_path / f"f{i}.png")
    share = folder_face_share(tmp_path)
    err = capfd.readouterr().err
    assert share.median is not None and share.median > 0.3
    assert "XNNPACK" not in err and "W0000" not in err and "absl" not in err, err



def test_the_apps_face_stage_and_the_trigger_tool_print_no_mediapipe_start_up(capfd):
    import cv2
    from skimage import data

    from edge_app.face import FaceMeshStage
    from securegaze.attacks.physical import FaceMeshLocator

    face = np.ascontiguousarray(data.astronaut()[0:200, 130:330])
    stage = FaceMeshStage()
    blank = np.zeros((120, 160, 3), np.uint8)
    assert stage.detect(blank) is None  # frames without a face first: still quiet when one comes
    assert stage.detect(cv2.cvtColor(face, cv2.COLOR_RGB2BGR)) is not None
    assert FaceMeshLocator().locate(face) is not None
    err = capfd.readouterr().err
    assert "XNNPACK" not in err and "W0000" not in err and "absl" not in err, err
