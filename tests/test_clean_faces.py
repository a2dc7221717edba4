"""A start-up check's clean folder of photos (camera frames of the synthetic driver) is read through
the app's face stage, as the app reads a frame; a folder of face crops is read as it is."""

import shutil
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from edge_app.clean_faces import FRAMING, FaceStageFramer, folder_framing
from edge_app.config import EdgeConfig
from edge_app.integrity import IntegrityChecker, IntegritySettings
from edge_app.sources import Frame, open_source
from securegaze.data.image_folder import load_image_folder
from securegaze.errors import DatasetError


@pytest.fixture(scope="module")
def driver_frames(tmp_path_factory):
    """40 camera frames (640 x 480) of the short scripted drive, every third one, as JPEG files:
    a face in a cabin, the way a user's own recordings look."""
    folder = tmp_path_factory.mktemp("frames")
    source = open_source("synthetic:short", EdgeConfig())
    index, frames = 0, []
    while len(frames) < 40 and (frame := source.read()) is not None:
        if index % 3 == 0:
            frames.append(frame.image)
            cv2.imwrite(str(folder / f"frame{index:04d}.jpg"), frame.image)
        index += 1
    return folder, frames


@pytest.fixture(scope="module")
def face_crops(tmp_path_factory):
    from securegaze.data.synthetic import render_dataset

    folder = tmp_path_factory.mktemp("crops")
    for i, face in enumerate(render_dataset(40, 96, seed=8).images):
        Image.fromarray(face).save(folder / f"crop{i:02d}.png")
    return folder


def test_camera_frames_are_photos_and_face_crops_are_crops(driver_frames, face_crops):
    framing, why = folder_framing(driver_frames[0])
    assert framing == FRAMING and "photos, not face crops" in why, why
    share = float(why.split("the face spans ")[1].split("%")[0])
    assert share < 35, why  # measured 19 %: a cabin frame is mostly cabin
    framing, why = folder_framing(face_crops)
    assert framing is None and why.endswith("): face crops"), why
    assert float(why.split("the face spans ")[1].split("%")[0]) > 60, why  # measured 70 %


def test_the_framer_cuts_the_very_crop_the_pipeline_gives_the_model(driver_frames):
    from edge_app.engines import OnnxRuntimeEngine
    from edge_app.pipeline import Pipeline
    from edge_app.zones import load_zone_map

    config, image = EdgeConfig(), driver_frames[1][5]
    engine = OnnxRuntimeEngine("models/default", providers=["cpu"])
    framer = FaceStageFramer(config, engine.input_size)
    pipeline = Pipeline(config, engine, load_zone_map(), static_images=True)
    try:
        crop = framer(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        record = pipeline.process(Frame(image, 0.0, 0, time.perf_counter(), still=True))
        assert framer(np.zeros((480, 640, 3), np.uint8)) is None  # no face: left out
    finally:
        framer.close()
        pipeline.close()
    assert crop.shape == (engine.input_size, engine.input_size, 3)
    assert np.array_equal(crop, record.crop_rgb)


def test_the_loader_leaves_out_photos_without_a_face_and_counts_them(driver_frames, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(driver_frames[0], folder)
    cv2.imwrite(str(folder / "zz_empty_cabin.png"), np.full((480, 640, 3), 90, np.uint8))
    framer = FaceStageFramer(EdgeConfig(), 32)
    try:
        data = load_image_folder(folder, 32, framer=framer)
        assert data.images.shape == (40, 32, 32, 3) and folder / "zz_empty_cabin.png" not in data.used
        assert data.note.endswith("(640x480), each face found and normalised by the app's face stage, as a camera "
                                  "frame is, at 32x32 (1 without a face found left out); no labels"), data.note
        with pytest.raises(DatasetError, match=r"a face was found in 40 of the 41 images read, but at least 41 "
                                               r"are needed \(the test's minimum\)"):
            load_image_folder(folder, 32, minimum=41, why="the test's minimum", framer=framer)
    finally:
        framer.close()


def test_the_start_up_check_scans_the_faces_of_the_photos(driver_frames, face_crops, tiny_gaze_bundles, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_gaze_bundles["benign"], model)
    quick = {"steps": 10, "eval_every": 5, "eval_samples": 32, "sensitivity_samples": 32, "probe": False}

    def checker(folder):
        return IntegrityChecker(IntegritySettings(audit_db=tmp_path / "audit.sqlite3", clean=str(folder),
                                                  clean_samples=40, policy="warn", scan_settings=quick),
                                app_config=EdgeConfig())

    photos = checker(driver_frames[0])
    assert photos.key_for(model).clean_set.endswith(f"samples=40 seed=20250505 framing={FRAMING}")
    result = photos.check(model)
    assert result.source == "scan"
    note = next(n for n in result.notes if n.startswith("clean set: "))
    assert "each face found and normalised by the app's face stage" in note and "photos, not face crops" in note, note
    assert result.record.report["details"]["clean_set"]["framing"] == FRAMING
    crops = checker(face_crops)
    assert "framing=" not in crops.key_for(model).clean_set
    # Without the app's config (securegaze's own reading) the same folder of photos is not framed.
    assert "framing=" not in IntegrityChecker(IntegritySettings(clean=str(driver_frames[0]))).key_for(model).clean_set


def test_edge_app_crops_writes_the_faces_for_the_scanner(driver_frames, tmp_path, capsys):
    from edge_app.cli import main

    out = tmp_path / "crops"
    assert main(["crops", str(driver_frames[0]), "--out", str(out), "--size", "64"]) == 0
    written = sorted(out.iterdir())
    assert [p.stem for p in written] == sorted(p.stem for p in driver_frames[0].iterdir())
    assert all(cv2.imread(str(p)).shape == (64, 64, 3) for p in written[:3])
    assert f"crops: 40 faces of 40 images or frames written to {out} at 64x64 px" in capsys.readouterr().err
    # The crops are face crops: read as they are, they fill most of their width.
    framing, _ = folder_framing(out)
    assert framing is None
    before = sorted(out.iterdir())
    assert main(["crops", str(driver_frames[0]), "--out", str(out)]) == 2
    assert "the folder already holds files" in capsys.readouterr().err and sorted(out.iterdir()) == before
    blank = tmp_path / "blank"
    blank.mkdir()
    cv2.imwrite(str(blank / "wall.png"), np.full((240, 320, 3), 128, np.uint8))
    assert main(["crops", str(blank), "--out", str(tmp_path / "none")]) == 2
    assert "no face found in any of its 1 images or frames" in capsys.readouterr().err
    assert not (tmp_path / "none").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert main(["crops", str(tmp_path / "absent"), "--out", str(tmp_path / "none")]) == 2
    same = tmp_path / "same_name"
    same.mkdir()
    for suffix in (".jpg", ".png"):  # two photos of one name: neither crop replaces the other
        cv2.imwrite(str(same / f"a{suffix}"), driver_frames[1][0])
    assert main(["crops", str(same), "--out", str(tmp_path / "same_crops")]) == 0
    assert sorted(p.name for p in (tmp_path / "same_crops").iterdir()) == ["a-1.png", "a.png"]
    assert "absent: no such file or folder; expected an image folder, an image or a video file" in capsys.readouterr().err


def test_securegaze_scan_warns_of_photos_and_names_edge_app_crops(driver_frames, face_crops, tiny_gaze_bundles,
                                                                 tmp_path, capsys):
    import json

    from securegaze.cli import main as sg_main

    out = tmp_path / "scan"
    code = sg_main(["scan", str(tiny_gaze_bundles["benign"]), "--clean", str(driver_frames[0]), "--samples", "36",
                    "--out", str(out), "--set", "steps=10", "--set", "probe=false"])
    printed = "".join(capsys.readouterr().out.split())  # the console wraps long lines, inside paths too
    assert code in (0, 10), printed
    assert "photos,notfacecrops" in printed and f"edge-appcrops{driver_frames[0]}--outFACES" in printed
    assert printed.count("photos,notfacecrops") == 1, printed  # said once, before the scan; recalled after
    assert "warning:theclean set'swarningaboveholdsforthisverdict".replace(" ", "") in printed, printed
    report = json.loads((out / "report.json").read_text())
    assert report["details"]["clean_set"]["face_share"] < 0.35  # 0.19 measured
    assert any("photos, not face crops" in w for w in report["details"]["warnings"])
    code = sg_main(["scan", str(tiny_gaze_bundles["benign"]), "--clean", str(face_crops), "--samples", "36",
                    "--out", str(tmp_path / "scan2"), "--set", "steps=10", "--set", "probe=false"])
    printed = capsys.readouterr().out
    assert code in (0, 10) and "photos" not in printed, printed
    crops = json.loads((tmp_path / "scan2" / "report.json").read_text())["details"]["clean_set"]
    assert crops["face_share"] > 0.6 and "warning" not in crops
