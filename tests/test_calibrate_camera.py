"""``edge-app calibrate board`` and ``calibrate camera``: true-size pages, and intrinsics recovered from
views of the board rendered with known intrinsics and lens distortion; the refusals of poor coverage."""

import re

import cv2
import numpy as np
import pytest

from edge_app.calibrate.board import BoardSpec, synthetic_views
from edge_app.cli import main
from edge_app.head_pose import CameraIntrinsics
from securegaze.data.printable_triggers import PAPER_MM
from securegaze.errors import ConfigError

#: The camera the views are rendered with: a 640x480 webcam of ~56 deg, off-centre, with barrel distortion.
K = np.array([[600.0, 0.0, 322.0], [0.0, 600.0, 236.0], [0.0, 0.0, 1.0]])
DIST = np.array([-0.08, 0.02, 0.0, 0.0, 0.0])
SIZE = (640, 480)
BOARD = "charuco:8x6:25:18:DICT_4X4_50"
PT_PER_MM = 72 / 25.4


def _folder(root, name, images):
    folder = root / name
    folder.mkdir()
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"view_{i:02d}.png"), image)
    return folder


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    """Folders of rendered views: good ones (14, corners and tilts covered), all in the middle of the
    frame, and all facing the camera (12 each)."""
    root = tmp_path_factory.mktemp("views")
    board = BoardSpec.parse(BOARD)
    return {"good": _folder(root, "good", synthetic_views(board, K, DIST, SIZE, 14, seed=0)),
            "middle": _folder(root, "middle", synthetic_views(board, K, DIST, SIZE, 12, seed=1, spread=0.0)),
            "flat": _folder(root, "flat", synthetic_views(board, K, DIST, SIZE, 12, seed=2, tilt_deg=0.0))}


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_camera_calibration_recovers_the_focal_length(views, tmp_path, capsys):
    out = tmp_path / "camera.yaml"
    assert main(["calibrate", "camera", "--source", str(views["good"]), "--board", BOARD, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rms = float(re.search(r"RMS reprojection error ([\d.]+) px", printed).group(1))
    assert rms < 0.5, printed
    cam = CameraIntrinsics.from_yaml(out)  # the app's own reader
    assert (cam.width, cam.height) == SIZE
    assert abs(cam.fx / K[0, 0] - 1) < 0.02 and abs(cam.fy / K[1, 1] - 1) < 0.02, cam  # measured: 0.3 %
    assert abs(cam.cx - K[0, 2]) < 3 and abs(cam.cy - K[1, 2]) < 3, cam
    assert abs(cam.distortion[0] - DIST[0]) < 0.02, cam  # the barrel distortion is found too
    assert not list(tmp_path.glob(".*tmp"))  # nothing left of the atomic write


@pytest.mark.parametrize("case,needle", [
    ("few", "too few views: the board was found in 6 distinct views"),
    ("middle", "never reached the frame's top-left, top-right, bottom-left and bottom-right corners"),
    ("flat", "views turned left or right by 15 deg or more (need 2 each way; largest tilts 0."),
])
def test_poor_coverage_is_refused_naming_what_is_missing(views, tmp_path, capsys, case, needle):
    source = views["flat" if case == "flat" else "middle"] if case != "few" else tmp_path / "few"
    if case == "few":
        source.mkdir()
        for p in sorted(views["good"].iterdir())[:6]:
            (source / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "camera.yaml"
    assert main(["calibrate", "camera", "--source", str(source), "--out", str(out)]) == 2
    assert needle in _error_line(capsys)
    assert not out.exists()


def test_chessboard_views_calibrate_too(tmp_path):
    from edge_app.calibrate.camera import calibrate_views, collect_views
    from edge_app.sources import MemorySource

    board = BoardSpec.parse("chessboard:8x6:25")
    got = collect_views(MemorySource(synthetic_views(board, K, DIST, SIZE, 11, seed=3)), board)
    cal = calibrate_views(got)
    assert len(cal.used) >= 10 and cal.rms_px < 0.5
    assert abs(cal.matrix[0, 0] / K[0, 0] - 1) < 0.02


def _pdf_page_and_image_mm(path):
    """(page (w, h) mm, (w, h) mm of the embedded board picture from its placement matrix)."""
    import zlib

    data = path.read_bytes()
    box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]*)\]", data).group(1).split()]
    sizes = []
    for m in re.finditer(rb"stream\r?\n(.*?)endstream", data, re.S):
        try:
            content = zlib.decompressobj().decompress(m.group(1))
        except zlib.error:
            continue
        for nums in re.findall(rb"((?:-?[\d.]+\s+){6})cm\s*/I\d+ Do", content):
            a, b, c, d, _, _ = (float(v) for v in nums.split())
            sizes.append((np.hypot(a, b) / PT_PER_MM, np.hypot(c, d) / PT_PER_MM))
    return ((box[2] - box[0]) / PT_PER_MM, (box[3] - box[1]) / PT_PER_MM), sizes


@pytest.mark.parametrize("board,paper", [(BOARD, "a4"), ("chessboard:10x7:20", "letter")])
def test_board_page_is_true_size(tmp_path, capsys, board, paper):
    out = tmp_path / "board.pdf"
    assert main(["calibrate", "board", "--out", str(out), "--board", board, "--paper", paper]) == 0
    printed = capsys.readouterr().out
    spec = BoardSpec.parse(board)
    assert f"square size {spec.square_mm:g} mm" in printed and spec.text in printed
    page, images = _pdf_page_and_image_mm(out)
    assert page == pytest.approx(PAPER_MM[paper][::-1], abs=0.01)  # landscape
    assert images == [pytest.approx(spec.size_mm, abs=0.01)]


def test_board_page_pixels_are_the_board(tmp_path):
    from edge_app.calibrate.board import write_board_page

    out = tmp_path / "board.png"
    write_board_page(BoardSpec.parse(BOARD), out, dpi=150)
    page = cv2.imread(str(out))
    found = BoardSpec.parse(BOARD).detect(page)  # the printed page itself is a detectable board
    assert found is not None and len(found.image_points) == 35
    pitch_px = np.median(np.diff(np.sort(np.unique(np.round(found.image_points[:, 0])))))
    assert pitch_px / 150 * 25.4 == pytest.approx(25.0, abs=0.3)


@pytest.mark.parametrize("text", ["charuco:8x6:25", "chessboard:2x6:25", "charuco:8x6:25:30", "hexagon:8x6:25",
                                  "charuco:12x12:20:15:DICT_4X4_50", "chessboard:8x6:900"])
def test_bad_board_spellings(text):
    with pytest.raises(ConfigError):
        BoardSpec.parse(text)


def test_board_that_does_not_fit_and_bad_outputs(tmp_path, capsys):
    assert main(["calibrate", "board", "--out", str(tmp_path / "b.pdf"), "--board", "chessboard:12x10:25"]) == 2
    assert "does not fit on landscape a4" in _error_line(capsys)
    assert main(["calibrate", "camera", "--source", str(tmp_path), "--out", str(tmp_path / "c.txt")]) == 2
    assert "expected a .yaml file" in _error_line(capsys)
    assert main(["calibrate", "camera", "--source", "synthetic", "--out", str(tmp_path / "c.yaml")]) == 2
    assert "shows no board" in _error_line(capsys)
