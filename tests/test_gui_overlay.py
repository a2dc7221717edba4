"""What a person sees: the overlay rendered offscreen on a real face frame (MediaPipe landmarks of
a synthetic-driver frame) with scripted gaze, alerts and integrity states, pixel-checked; the whole
app under Xvfb with the xcb platform plugin; no display -> a clear error.

Screenshots go to pytest's tmp dir; with ``UPDATE_DOCS_SCREENSHOTS=1`` they are also copied to
docs/overlay_offscreen.png and docs/overlay_xvfb.png, and the committed ones are checked below.
"""

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from edge_app.gui.qt_env import (  # noqa: E402
    create_application,
    display_problem,
    prepare_qt_environment,
    x_display_reachable,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"
UPDATE_DOCS = os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1"
W, H = 640, 480


@pytest.fixture(scope="module")
def face_frame():
    """A 640x480 synthetic-driver frame looking ahead and its real Face Mesh landmarks."""
    from edge_app.face import FaceMeshStage
    from edge_app.synthetic_driver import SyntheticDriver
    from edge_app.zones import load_zone_map

    driver = SyntheticDriver(load_zone_map(None).targets_deg(), fps=10.0)
    image, _, _ = driver.render_frame(0)
    with FaceMeshStage(static_image_mode=True) as stage:
        face = stage.detect(image)
    assert face is not None
    return image, face.points_px


@pytest.fixture(scope="module")
def qapp():
    if os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        pytest.skip("these tests render offscreen (QT_QPA_PLATFORM=offscreen)")
    return create_application()


def _render(qapp, state):
    """The view at exactly the frame's size (1:1 pixels), as an (H, W, 3) uint8 RGB array."""
    from PyQt6.QtGui import QImage

    from edge_app.gui.overlay import OverlayView

    view = OverlayView()
    view.resize(W, H)
    view.show_state(state)
    image = view.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    assert (image.width(), image.height()) == (W, H)
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    rows = np.frombuffer(ptr, np.uint8).reshape(H, image.bytesPerLine())
    return rows[:, : 3 * W].reshape(H, W, 3).copy(), view


def _mask(rgb, colour, tol=40):
    return (np.abs(rgb.astype(int) - np.array(colour)) <= tol).all(-1)


def _state(face_frame, **kw):
    from edge_app.gui.overlay import IntegrityBadge, OverlayState

    image, points = face_frame
    base = dict(image=image, landmarks=points, gaze=np.radians([0.0, 0.0]), zone="road_ahead", state="ATTENTIVE",
                badge=IntegrityBadge("verified", "verified (database, sha256 0123abcd)"))
    return OverlayState(**{**base, **kw})


@pytest.mark.parametrize("gaze_deg, axis, sign", [((0, 30), 0, -1), ((0, -30), 0, +1), ((30, 0), 1, -1),
                                                   ((-30, 0), 1, +1)])
def test_arrow_points_the_way_the_gaze_goes(qapp, face_frame, gaze_deg, axis, sign):
    """Positive yaw looks to the image's left, positive pitch up (securegaze.geometry)."""
    from edge_app.gui.overlay import ARROW_RGB, IRIS_CENTRES

    rgb, _ = _render(qapp, _state(face_frame, gaze=np.radians(gaze_deg)))
    arrow = _mask(rgb, ARROW_RGB)
    assert arrow.sum() > 40, "no gaze arrow drawn"
    ys, xs = np.nonzero(arrow)
    eyes = face_frame[1][list(IRIS_CENTRES)].mean(axis=0)
    offset = np.array([xs.mean(), ys.mean()]) - eyes
    assert sign * offset[axis] > 10, f"arrow centroid offset {offset} px for gaze {gaze_deg} deg"
    assert abs(offset[1 - axis]) < 0.5 * abs(offset[axis])


def test_no_arrow_without_gaze(qapp, face_frame):
    from edge_app.gui.overlay import ARROW_RGB

    rgb, _ = _render(qapp, _state(face_frame, gaze=None, state="NO_FACE"))
    assert _mask(rgb, ARROW_RGB).sum() == 0


@pytest.mark.parametrize("alert", [0, 1, 2, 3])
def test_banner_appears_at_its_alert_level(qapp, face_frame, alert):
    from edge_app.gui.overlay import BANNER_RGB

    rgb, view = _render(qapp, _state(face_frame, alert=alert, alert_fraction=alert / 3, state="DISTRACTED",
                                     zone="phone_lap"))
    h = max(36, int(H * 0.09))
    band = rgb[H - h - 34: H - 34]  # where the banner goes, above the alert bar
    for level, colour in BANNER_RGB.items():
        share = _mask(band, colour, tol=12).mean()
        if level == alert:
            assert share > 0.5, f"banner of level {alert} covers only {share:.0%} of its band"
        else:
            assert share < 0.05, f"colour of level {level} shown at level {alert}"


def test_blocked_badge_shows_for_a_blocked_model(qapp, face_frame):
    from edge_app.gui.overlay import ARROW_RGB, BADGE_RGB, IntegrityBadge

    class Blocked:  # the fields IntegrityBadge.from_result reads, as the integrity check fills them
        blocked, verdict, source, model_sha256 = True, "backdoored", "scan", "ab" * 32
        reason = "model m (sha256 abababababab) scanned backdoored by securegaze 1.1: blocked, no gaze or alarms"

    badge = IntegrityBadge.from_result(Blocked())
    assert badge.kind == "blocked" and badge.text.startswith("BLOCKED: ")
    rgb, view = _render(qapp, _state(face_frame, badge=badge, gaze=None, state="BLOCKED", zone=None))
    r = view.badge_rect()
    region = rgb[int(r.top()) + 3: int(r.bottom()) - 3, int(r.left()) + 8: int(r.right()) - 8]
    assert _mask(region, BADGE_RGB["blocked"], tol=12).mean() > 0.6
    assert _mask(rgb, BADGE_RGB["verified"], tol=12).sum() == 0 and _mask(rgb, ARROW_RGB).sum() == 0
    verified, view = _render(qapp, _state(face_frame))
    region = verified[int(r.top()) + 3: int(r.bottom()) - 3, int(r.left()) + 8: int(r.right()) - 8]
    assert _mask(region, BADGE_RGB["verified"], tol=12).mean() > 0.6
    assert _mask(verified, BADGE_RGB["blocked"], tol=12).sum() == 0


def test_degraded_mode_stripe_shows_and_hides_the_untrusted_gaze(qapp, face_frame):
    """A record in degraded mode (edge_app/degraded.py): the purple stripe across the top with the
    reason, "mode: head pose only" in the status box, and no gaze arrow although the record has one."""
    from edge_app.attention import AlertLevel, AttentionOutput, AttentionState
    from edge_app.face import FaceLandmarks
    from edge_app.gui.overlay import ARROW_RGB, DEGRADED_RGB, IntegrityBadge, state_from_record, status_lines
    from edge_app.pipeline import FrameRecord
    from edge_app.sources import Frame

    image, points = face_frame
    face = FaceLandmarks(points, np.zeros(len(points), np.float32), (W, H))
    attention = AttentionOutput(AttentionState.DISTRACTED, AlertLevel.WARNING, "head_off_road", None, 3.2, 3.2)
    badge = IntegrityBadge("warning", "WARNING: model flagged backdoored (policy warn)")
    records = {mode: FrameRecord(Frame(image, 5.0, 50, 0.0), face=face, gaze=np.radians([-20.0, 5.0]),
                                 gaze_smoothed=np.radians([-20.0, 5.0]), zone="phone_lap", attention=attention,
                                 mode=mode, mode_reason=reason)
               for mode, reason in (("gaze", None), ("degraded_head_pose", "gaze_model_anomaly: model still while "
                                                                           "the eyes moved"))}
    degraded = state_from_record(records["degraded_head_pose"], badge)
    assert degraded.gaze is None and status_lines(degraded)[0] == "mode: head pose only"
    rgb, view = _render(qapp, degraded)
    r = view.degraded_rect()
    stripe = rgb[int(r.top()) + 2: int(r.bottom()) - 2]
    assert _mask(stripe, DEGRADED_RGB, tol=12).mean() > 0.5 and _mask(rgb, ARROW_RGB).sum() == 0
    assert view.badge_rect().top() >= r.bottom()  # the badge moves below the stripe
    gaze, view = _render(qapp, state_from_record(records["gaze"], badge))
    assert _mask(gaze, DEGRADED_RGB, tol=12).sum() == 0 and _mask(gaze, ARROW_RGB).sum() > 20


def _check_overlay_screenshot(rgb):
    """What every overlay screenshot must show: a gaze arrow, a face box, a badge colour."""
    from edge_app.gui.overlay import ARROW_RGB, BADGE_RGB, FACE_BOX_RGB

    assert _mask(rgb, ARROW_RGB).sum() > 20
    assert _mask(rgb, FACE_BOX_RGB, tol=30).sum() > 200
    assert any(_mask(rgb, c, tol=12).sum() > 500 for c in BADGE_RGB.values())


def test_offscreen_screenshot(qapp, face_frame, tmp_path):
    """A distracted driver with the warning banner: saved as the docs screenshot."""
    from PyQt6.QtGui import QImage

    from edge_app.gui.overlay import BANNER_RGB

    state = _state(face_frame, gaze=np.radians([-25.0, 10.0]), zone="phone_lap", state="DISTRACTED", alert=1,
                   alert_reason="eyes_off_road", alert_fraction=3.4 / 11, fps=30.0, trigger_on=False)
    rgb, view = _render(qapp, state)
    _check_overlay_screenshot(rgb)
    assert _mask(rgb, BANNER_RGB[1], tol=12).sum() > 5000
    out = tmp_path / "overlay_offscreen.png"
    assert view.grab().save(str(out), "PNG")
    assert QImage(str(out)).width() == W
    if UPDATE_DOCS:
        shutil.copy(out, DOCS / "overlay_offscreen.png")


@pytest.mark.parametrize("name", ["overlay_offscreen.png", "overlay_xvfb.png"])
def test_committed_docs_screenshots_show_the_overlay(name):
    from PIL import Image

    path = DOCS / name
    assert path.is_file(), f"{path} missing: run the GUI tests with UPDATE_DOCS_SCREENSHOTS=1"
    _check_overlay_screenshot(np.asarray(Image.open(path).convert("RGB")))


def test_environment_after_cv2_is_cleaned_for_pyqt6():
    import cv2  # noqa: F401 - importing it is what sets the variables

    env = {"QT_QPA_PLATFORM_PLUGIN_PATH": str(Path(cv2.__file__).parent / "qt" / "plugins"),
           "QT_QPA_FONTDIR": str(Path(cv2.__file__).parent / "qt" / "fonts"),
           "LD_LIBRARY_PATH": f"{Path(cv2.__file__).parent}/../../lib64:/opt/keep/lib", "OTHER": "x"}
    removed = prepare_qt_environment(env)
    assert set(removed) == {"QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR", "LD_LIBRARY_PATH"}
    assert env == {"LD_LIBRARY_PATH": "/opt/keep/lib", "OTHER": "x"}


def test_no_display_is_one_clear_line_and_exit_2(tiny_gaze_bundles, tmp_path, capsys, monkeypatch):
    from edge_app.cli import main

    assert display_problem({}) is not None and "headless" in display_problem({})
    assert "cannot connect" in display_problem({"DISPLAY": ":4321"})
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}) is None
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    code = main(["run", "--gui", "--source", "synthetic:short", "--model", str(tiny_gaze_bundles["benign"]),
                 "--audit-db", str(tmp_path / "audit.db")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: no display available (DISPLAY is not set)")
    assert "edge-app run without --gui" in err[-1]
    assert not (tmp_path / "audit.db").exists()  # refused before the scan


def _fast_config(tmp_path) -> Path:
    path = tmp_path / "fast.yaml"
    path.write_text("integrity:\n  clean_samples: 64\n  scan_settings: {steps: 60, eval_samples: 64, "
                    "sensitivity_samples: 64}\n")
    return path


def test_whole_app_under_xvfb_with_xcb(tiny_gaze_bundles, tmp_path):
    """The real window on a real X server (Xvfb) through Qt's xcb plugin, after cv2 set its Qt paths:
    scan splash, pipeline thread, display, screenshot at exit."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not on PATH (apt-get install xvfb; .ci/run installs it)")
    read_fd, write_fd = os.pipe()
    server_log = tmp_path / "xvfb.log"
    with open(server_log, "w") as log:
        # -noreset: an X server resets when its last client disconnects, and the probe below is a client;
        # the app's own display check could then meet a server still resetting and be refused.
        server = subprocess.Popen([xvfb, "-displayfd", str(write_fd), "-screen", "0", "1024x768x24", "-nolisten",
                                   "tcp", "-noreset"], pass_fds=(write_fd,), stdout=log, stderr=log)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as fh:
            number = fh.readline().strip()  # Xvfb writes the display number once it accepts clients
        assert number.isdigit(), f"Xvfb did not start: {server_log.read_text()[-2000:]}"
        # On a loaded machine the first connection can still be refused for a moment after that: wait
        # (at most 20 s) until a client can connect, so the test checks the app, not the server's start.
        deadline = time.monotonic() + 20.0
        while x_display_reachable(f":{number}") is False and time.monotonic() < deadline:
            assert server.poll() is None, f"Xvfb exited: {server_log.read_text()[-2000:]}"
            time.sleep(0.2)
        shot = tmp_path / "overlay_xvfb.png"
        env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
        env.update(DISPLAY=f":{number}", QT_QPA_PLATFORM="xcb")
        cmd = [sys.executable, "-m", "edge_app.cli", "run", "--gui", "--source", "synthetic:short", "--model",
               str(tiny_gaze_bundles["benign"]), "--config", str(_fast_config(tmp_path)), "--audit-db",
               str(tmp_path / "audit.db"), "--max-frames", "45", "--screenshot", str(shot), "--out",
               str(tmp_path / "frames.jsonl")]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr[-3000:] + f"\nXvfb: {server_log.read_text()[-2000:]}"
    assert "gui: Qt platform xcb" in proc.stderr
    assert len((tmp_path / "frames.jsonl").read_text().splitlines()) == 45
    from PIL import Image

    rgb = np.asarray(Image.open(shot).convert("RGB"))
    _check_overlay_screenshot(rgb)
    from edge_app.gui.overlay import BADGE_RGB

    assert _mask(rgb, BADGE_RGB["verified"], tol=12).sum() > 500  # the benign model was scanned clean
    if UPDATE_DOCS:
        shutil.copy(shot, DOCS / "overlay_xvfb.png")


def test_arrow_geometry_matches_the_convention():
    from edge_app.gui.app import arrow_direction

    assert arrow_direction(np.radians([0.0, 30.0])) == pytest.approx([-1.0, 0.0], abs=1e-9)
    assert arrow_direction(np.radians([30.0, 0.0])) == pytest.approx([0.0, -1.0], abs=1e-9)
    d = arrow_direction(np.radians([20.0, -20.0]))
    assert d[0] > 0 and d[1] < 0 and math.isclose(np.hypot(*d), 1.0)
