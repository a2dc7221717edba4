"""Image folders detect afresh on every frame (issue 14.5), and a blocked model is monitored in
degraded mode end to end (issue 14.3): ``edge-app run`` on the synthetic driver with real MediaPipe,
the default model's bundle and an audit record that says it is backdoored."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_app.cli import main
from edge_app.config import EdgeConfig
from edge_app.engines import create_engine
from edge_app.face import FaceMeshStage
from edge_app.integrity import EXIT_BLOCKED, IntegrityChecker
from edge_app.pipeline import Pipeline, run_pipeline
from edge_app.sources import ImageFolderSource, open_source
from edge_app.startup import load_edge_config
from edge_app.synthetic_driver import SHORT_SCRIPT, SyntheticDriver
from edge_app.zones import load_zone_map

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default"
ZONES = load_zone_map()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Six unrelated face photos: five synthetic people (seeds 0, 3, 7, 11, 5), each shrunk and moved
    to another corner of its frame, and scikit-image's astronaut (a real photograph, 512x512) third."""
    folder = tmp_path_factory.mktemp("photos")
    shifts = [(-170, -60), (170, 60), (0, 0), (-170, 80), (170, -80)]
    images = []
    for (dx, dy), seed in zip(shifts, (0, 3, 7, 11, 5), strict=True):
        frame = SyntheticDriver(ZONES.targets_deg(), SHORT_SCRIPT, fps=2, seed=seed).render_frame(7)[0]
        move = np.float32([[0.8, 0, dx + 64], [0, 0.8, dy + 48]])
        images.append(cv2.warpAffine(frame, move, (640, 480), borderMode=cv2.BORDER_REPLICATE))
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image supplies the photograph")
    images.insert(2, cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))
    for k, image in enumerate(images):
        cv2.imwrite(str(folder / f"{k:02d}.{'jpg' if k % 2 else 'png'}"), image)
    return folder


def test_an_image_folder_finds_a_face_in_every_photo(photo_folder):
    source = open_source(str(photo_folder))
    assert isinstance(source, ImageFolderSource) and len(source.files) == 6
    config = EdgeConfig()
    pipeline = Pipeline(config, create_engine("onnxruntime", DEFAULT_MODEL, ["cpu"], 1), ZONES)
    records = []
    try:
        summary = run_pipeline(pipeline, source, records.append)
    finally:
        pipeline.close()
    assert summary.frames == 6 and [r.frame.index for r in records] == list(range(6))
    assert all(r.frame.still for r in records)
    missing = [r.frame.index for r in records if r.face is None]
    assert not missing, f"no face on photos {missing}"
    assert all(r.gaze is not None and r.mode == "gaze" for r in records)
    # The same photos tracked like video frames lose faces: what the folder source must not do.
    with FaceMeshStage() as tracking:
        tracked = [tracking.detect(r.frame.image) is not None for r in records]
    assert not all(tracked)


def test_a_single_image_is_a_one_frame_source(photo_folder, tmp_path):
    photo = sorted(photo_folder.iterdir())[2]
    source = open_source(str(photo))
    assert isinstance(source, ImageFolderSource) and source.files == [photo]
    frames = list(iter(source.read, None))
    assert len(frames) == 1 and frames[0].still and frames[0].image.shape == (512, 512, 3)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    from securegaze.errors import InputFileError

    with pytest.raises(InputFileError, match="notes.txt: not an image"):
        ImageFolderSource(text)


@pytest.fixture(scope="module")
def blocked_drive(tmp_path_factory):
    """The short drive (a 1-s mirror check, a 3-s phone glance) at 5 fps, by an "owl" driver whose
    head makes 60 % of each gaze shift, with a model the audit database says is backdoored (the
    record is forged: the subject here is what the app does with a blocked model, not the scan)."""
    root = tmp_path_factory.mktemp("blocked")
    model = root / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    config = root / "edge.yaml"
    config.write_text("synthetic:\n  fps: 5\n  head_follow: 0.6\n")
    db = root / "audit.sqlite3"
    IntegrityChecker(load_edge_config(config, audit_db=db).integrity).record_verdict(
        model, "backdoored", 0.01, 0.15, "forged by tests/test_edge_modes.py")
    out, summary = root / "frames.jsonl", root / "summary.json"
    code = main(["run", "--source", "synthetic:short", "--model", str(model), "--config", str(config),
                 "--audit-db", str(db), "--out", str(out), "--summary", str(summary)])
    return dict(code=code, lines=[json.loads(x) for x in out.read_text().splitlines()],
                summary=json.loads(summary.read_text()))


def test_a_blocked_model_is_never_run_and_every_frame_is_monitored_on_head_pose(blocked_drive):
    assert blocked_drive["code"] == EXIT_BLOCKED
    lines = blocked_drive["lines"]
    assert len(lines) == 57  # 11.5 s at 5 fps: every frame, none skipped
    for line in lines:
        assert line["mode"] == "degraded_head_pose" and "backdoored" in line["mode_reason"]
        assert line["gaze_deg"] is None and line["zone"] is None and "infer" not in line["latency_ms"]
    assert sum(line["head_monitor"] is not None for line in lines) >= 55


def test_the_blocked_drive_raises_the_phone_warning_from_head_pose(blocked_drive):
    checks = {c["label"]: c for c in blocked_drive["summary"]["checks"]}
    phone, mirror = checks["phone on the lap 3 s"], checks["mirror check 1 s"]
    assert phone["passed"] and phone["observed_level"] == "warning" and phone["observed_reasons"] == ["head_off_road"]
    assert mirror["passed"] and mirror["observed_level"] == "none"
    warned = [x["timestamp_s"] for x in blocked_drive["lines"] if x["alert_reason"] == "head_off_road"]
    # The eyes leave the road at 6.0 s, the head crosses its limit by 6.4 s (a 0.4-s movement, 5 fps):
    # the warning 2.5 s later, within a frame.
    assert 8.6 <= warned[0] <= 9.2
    tally = blocked_drive["summary"]["tally"]
    assert tally["modes"] == {"degraded_head_pose": 57} and tally["gaze_frames"] == 0
    assert tally["alert_event_counts"] == {"head_off_road": 1}
