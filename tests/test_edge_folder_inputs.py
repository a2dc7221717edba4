"""Image folders as users have them, for ``edge-app crops`` and ``edge-app run --source``: a file name
that is not valid UTF-8 (Latin-1 bytes from an old zip), a photo cut short, images in subfolders.

OpenCV crashed the process (a segmentation fault) on a path with such a name, so the checks that
touch one run in a child process: a crash fails the test instead of ending the test run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_grey_video
from PIL import Image
from skimage.data import astronaut

from edge_app.cli import main
from edge_app.image_files import read_image
from edge_app.sources import ImageFolderSource
from securegaze.data.image_folder import list_images
from securegaze.errors import InputFileError
from securegaze.io import shown

ROOT = Path(__file__).resolve().parent.parent
#: "café_face.png" as an old Windows zip writes it: Latin-1, not UTF-8.
LATIN1 = b"caf\xe9_face.png"


@pytest.fixture(scope="module")
def face():
    """A real photo with one face: scikit-image's astronaut (512 x 512), BGR."""
    return cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)


def _save(path, bgr: np.ndarray, ext: str = ".png") -> None:
    """``bgr`` encoded as ``ext`` into ``path`` (str, Path or bytes: any file name)."""
    ok, data = cv2.imencode(ext, bgr)
    assert ok
    with open(path, "wb") as f:
        f.write(data.tobytes())


def _latin1(folder: Path, name: bytes = LATIN1) -> bytes:
    return os.path.join(os.fsencode(folder), name)


def _child(*args) -> tuple[int, str, str]:
    """Run ``python ARGS`` in a fresh process whose output must be strict UTF-8 -> (exit code, stdout,
    stderr), the output's odd bytes escaped."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict")
    done = subprocess.run([sys.executable, *args], capture_output=True, timeout=300, cwd=ROOT, env=env)
    return (done.returncode, done.stdout.decode("utf-8", "backslashreplace"),
            done.stderr.decode("utf-8", "backslashreplace"))


READ_FOLDER = """
import hashlib, json, sys
from edge_app.sources import open_source
src = open_source(sys.argv[1])
frames = list(iter(src.read, None))
digests = [hashlib.sha256(f.image.tobytes()).hexdigest() for f in frames]
print(json.dumps({"files": len(src.files), "frames": digests, "note": src.note,
                  "unreadable": [src.name(p) for p in src.unreadable]}))
"""

OPEN_FOLDER = """
import sys
from edge_app.sources import open_source
from securegaze.errors import InputFileError
try:
    open_source(sys.argv[1])
except InputFileError as e:
    print(e)
"""


def test_run_source_reads_an_image_named_in_latin1(face, tmp_path):
    import hashlib

    folder = tmp_path / "drive"
    folder.mkdir()
    mirrored = np.ascontiguousarray(face[:, ::-1])
    _save(folder / "a.png", face)
    _save(_latin1(folder), mirrored)
    code, out, err = _child("-c", READ_FOLDER, os.fsencode(folder))
    assert code == 0, f"exit {code}: {err}"
    got = json.loads(out)
    assert got["files"] == 2 and got["unreadable"] == [] and got["note"] is None
    assert got["frames"] == [hashlib.sha256(image.tobytes()).hexdigest() for image in (face, mirrored)]


def test_a_non_image_named_in_latin1_is_named_in_one_printable_line(face, tmp_path):
    _save(tmp_path / "a.png", face)
    with open(_latin1(tmp_path), "wb") as f:
        f.write(b"not an image at all")
    code, out, err = _child("-c", OPEN_FOLDER, os.fsencode(tmp_path))
    assert code == 0, f"exit {code}: {err}"
    assert out.startswith(f"{tmp_path}/caf\\xe9_face.png: not a readable image"), out
    assert shown(os.fsdecode(_latin1(tmp_path))) == f"{tmp_path}/caf\\xe9_face.png"


def test_crops_writes_the_face_of_an_image_named_in_latin1(face, tmp_path):
    folder, out = tmp_path / "photos", tmp_path / "faces"
    folder.mkdir()
    _save(folder / "a.png", face)
    _save(_latin1(folder), np.ascontiguousarray(face[:, ::-1]))
    code, _, err = _child("-m", "edge_app.cli", "crops", os.fsencode(folder), "--out", out, "--size", "64")
    assert code == 0, f"exit {code}: {err}"
    assert f"crops: 2 faces of 2 images or frames written to {out} at 64x64 px" in err, err
    assert sorted(os.listdir(os.fsencode(out))) == [b"a.png", LATIN1]
    crop = read_image(_latin1(out))
    assert crop is not None and crop.shape == (64, 64, 3)


def test_run_notes_subfolders_and_opens_a_folder_with_a_latin1_name(face, tmp_path):
    folder = tmp_path / "drive"
    (folder / "sub").mkdir(parents=True)
    _save(folder / "a.png", face)
    _save(_latin1(folder), face)
    _save(folder / "sub" / "b.png", face)
    code, _, err = _child("-m", "edge_app.cli", "run", "--source", os.fsencode(folder), "--model",
                          tmp_path / "no_such_model", "--audit-db", tmp_path / "audit.sqlite3")
    lines = err.splitlines()
    assert code == 2, f"exit {code}: {err}"
    note = "source: note: 1 image in 1 subfolder not read: sub; pass a subfolder as --source to read it"
    assert note in lines, err
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "no_such_model" in errors[0], err


def test_a_video_named_in_latin1_is_one_error_line(tmp_path):
    plain = tmp_path / "clip.avi"
    write_grey_video(plain, [60 * i for i in range(3)])
    os.rename(plain, _latin1(tmp_path, b"caf\xe9_clip.avi"))
    code, _, err = _child("-m", "edge_app.cli", "run", "--source", _latin1(tmp_path, b"caf\xe9_clip.avi"),
                          "--audit-db", tmp_path / "audit.sqlite3")
    assert code == 2, f"exit {code}: {err}"
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path}/caf\\xe9_clip.avi: OpenCV cannot open a file whose name is not "
                      "valid UTF-8; rename it (or link it under a plain name) and pass that"], err


def test_crops_counts_and_names_an_image_that_does_not_decode_and_reads_subfolders(face, tmp_path, capsys):
    folder, out = tmp_path / "photos", tmp_path / "faces"
    for sub in ("sub/deeper", ".hidden"):
        (folder / sub).mkdir(parents=True)
    mirrored = np.ascontiguousarray(face[:, ::-1])
    _save(folder / "a.png", face)
    _save(folder / "b.jpg", mirrored, ".jpg")
    _save(folder / "cut.png", face)
    whole = (folder / "cut.png").read_bytes()
    (folder / "cut.png").write_bytes(whole[: len(whole) // 3])  # the header passes, the pixels do not decode
    _save(folder / "sub" / "c.png", mirrored)
    _save(folder / "sub" / "deeper" / "d.jpeg", face, ".jpg")
    _save(folder / "sub" / ".e.png", face)  # hidden: not read, as securegaze scan --clean skips it
    _save(folder / ".hidden" / "f.png", face)
    assert main(["crops", str(folder), "--out", str(out), "--size", "64"]) == 0
    err = capsys.readouterr().err
    assert (f"crops: 4 faces of 5 images or frames (1 unreadable: cut.png) written to {out} at 64x64 px; "
            f"scan with: securegaze scan MODEL --clean {out}") in err, err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "b.png", "sub/c.png", "sub/deeper/d.png"]
    assert len(list_images(out)) == 4  # the clean set securegaze scan --clean reads
    # Crops written inside the photo folder would be read as photos by the next run: refused.
    assert main(["crops", str(folder), "--out", str(folder / "sub" / "faces")]) == 2
    assert "lies inside SOURCE" in capsys.readouterr().err and not (folder / "sub" / "faces").exists()
    (folder / "a.png").write_bytes(whole[:100])
    for path in (folder / "b.jpg", folder / "sub" / "c.png", folder / "sub" / "deeper" / "d.jpeg"):
        path.unlink()
    assert main(["crops", str(folder), "--out", str(tmp_path / "none")]) == 2
    assert "none of its 2 images decodes (2 unreadable: a.png, cut.png)" in capsys.readouterr().err


def test_the_folder_source_reads_subfolders_in_scan_order_or_notes_them(tmp_path):
    names = ["b.png", "a.jpg", "sub/z.png", "sub/a b.jpeg", "sub/deeper/m.png", "sub2/x.PNG", "sub-1/y.png"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        _save(tmp_path / name, np.full((20, 30, 3), 7, np.uint8))
    (tmp_path / ".hidden").mkdir()
    _save(tmp_path / ".hidden" / "h.png", np.zeros((20, 30, 3), np.uint8))
    whole = ImageFolderSource(tmp_path, check=True, subfolders=True)
    assert whole.files == list_images(tmp_path) and whole.note is None
    assert [whole.name(p) for p in whole.files][:3] == ["a.jpg", "b.png", "sub-1/y.png"]
    top = ImageFolderSource(tmp_path, check=True)
    assert [p.name for p in top.files] == ["a.jpg", "b.png"]
    assert top.note == "5 images in 4 subfolders not read: sub, sub-1, sub/deeper, ..."
    for name in names[:2]:
        (tmp_path / name).unlink()
    with pytest.raises(InputFileError, match="no images .* in this folder; subfolders are not read, and "
                                             "sub, sub-1, sub2 hold images: pass one of them"):
        ImageFolderSource(tmp_path)
    assert len(ImageFolderSource(tmp_path, subfolders=True).files) == 5


def test_images_read_through_bytes_are_those_imread_gives(tmp_path):
    """16-bit, grey, RGBA and EXIF-rotated files: cv2.imdecode of the bytes gives what cv2.imread did."""
    rgb = np.ascontiguousarray(astronaut()[::4, ::3])
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    Image.fromarray(np.ascontiguousarray(rgb[..., 1])).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(tmp_path / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 deg clockwise to show
    Image.fromarray(rgb).save(tmp_path / "turned.jpg", exif=exif)
    for path in sorted(tmp_path.iterdir()):
        expected = cv2.imread(str(path), cv2.IMREAD_COLOR)
        got = read_image(path)
        assert got is not None and got.shape == expected.shape and np.array_equal(got, expected), path.name
    assert read_image(tmp_path / "turned.jpg").shape[:2] == rgb.shape[1::-1]  # shown upright, as imread does
    (tmp_path / "empty.png").write_bytes(b"")
    assert read_image(tmp_path / "empty.png") is None and read_image(tmp_path / "absent.png") is None
