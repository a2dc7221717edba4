"""Clean sets as users have them (issue 13.5): a plain folder of PNG/JPEG face images, no labels.

The folders are written here: synthetic faces from the project's renderer at several sizes, some
non-square, as PNG and JPEG, and the astronaut's face from scikit-image when it is installed.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from securegaze.cli import main as sg_main
from securegaze.data.image_folder import (
    MIN_SIDE,
    ImageFolderDataset,
    clean_set_identity,
    list_images,
    load_image_folder,
)
from securegaze.data.sources import load_gaze_data, source_kind
from securegaze.data.synthetic import render_dataset
from securegaze.errors import DatasetError, InputFileError

#: Input size of the tiny model the end-to-end scan runs on.
SIZE = 32
#: The scan's default minimum clean-set size (SecureGazeSettings.min_clean).
SCAN_MINIMUM = 32


def _save(path, rgb, quality=95):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, **({"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg") else {}))
    return path


def _faces(folder, n, side, seed, suffix=".png", stretch=None):
    """``n`` rendered faces of ``side`` px saved under ``folder``; ``stretch`` (w, h) makes them non-square."""
    images = render_dataset(n, side, seed=seed).images
    for i, face in enumerate(images):
        image = Image.fromarray(face)
        if stretch:
            image = image.resize(stretch)
        _save(folder / f"s{side}-{seed}-{i:03d}{suffix}", np.asarray(image))
    return images


def _astronaut():
    skimage_data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(skimage_data.astronaut()[20:240, 150:330])  # her face, 180 wide x 220 high


@pytest.fixture
def mixed_folder(tmp_path):
    """40 face images: 12 PNG at 48 px, 12 JPEG at 96 px, 10 non-square PNG (120x90), 5 upper-case
    .JPEG at 64 px in a subfolder, and one 180x220 astronaut crop (a synthetic face if skimage is absent)."""
    folder = tmp_path / "faces"
    _faces(folder, 12, 48, seed=1)
    _faces(folder, 12, 96, seed=2, suffix=".jpg")
    _faces(folder, 10, 96, seed=3, stretch=(120, 90))
    _faces(folder / "person_b", 5, 64, seed=4, suffix=".JPEG")
    try:
        _save(folder / "astronaut.jpeg", _astronaut())
    except pytest.skip.Exception:
        _save(folder / "astronaut.jpeg", np.asarray(Image.fromarray(render_dataset(1, 220, seed=5).images[0])
                                                    .resize((180, 220))))
    return folder


def test_a_plain_folder_is_read_at_the_model_size_with_a_note(mixed_folder):
    data = load_gaze_data(str(mixed_folder), SIZE, need_labels=None)
    assert isinstance(data, ImageFolderDataset)
    assert data.images.shape == (40, SIZE, SIZE, 3) and data.images.dtype == np.uint8
    assert data.gaze.shape == (40, 2) and np.isnan(data.gaze).all() and not data.labelled
    assert data.images.std() > 20, "the faces were not read (flat images)"
    assert data.note.startswith(f"clean set: all 40 images from {mixed_folder}")
    assert "mixed sizes 48x48..180x220" in data.note
    assert f"to {SIZE}x{SIZE}" in data.note
    assert "11 non-square centre-cropped first" in data.note
    assert "no labels" in data.note
    assert source_kind(str(mixed_folder)) == "image_folder"


def test_pixels_keep_the_readers_layout_rgb_uint8_upright(tmp_path):
    """A PNG already at the model's size reads back bit-exact (no BGR swap, flip or rescale), like
    the renderer's own (N, S, S, 3) uint8 RGB arrays; a non-square one keeps its centre square."""
    folder = tmp_path / "faces"
    faces = _faces(folder, 33, SIZE, seed=7)
    wide = np.zeros((SIZE, SIZE + 20, 3), np.uint8)
    wide[:, :10] = (255, 0, 0)
    wide[:, -10:] = (0, 0, 255)
    wide[:, 10:-10] = faces[0]
    _save(folder / "zz-wide.png", wide)
    data = load_gaze_data(str(folder), SIZE, need_labels=None)
    np.testing.assert_array_equal(data.images[:33], faces)
    np.testing.assert_array_equal(data.images[33], faces[0])
    assert "1 non-square centre-cropped first" in data.note and "resized from mixed sizes" in data.note


def test_the_draw_is_seeded_without_repeats_and_a_short_folder_is_used_whole(mixed_folder):
    first = load_gaze_data(str(mixed_folder), SIZE, 10, seed=3, split="test", need_labels=None)
    again = load_gaze_data(str(mixed_folder), SIZE, 10, seed=3, split="test", need_labels=None)
    other = load_gaze_data(str(mixed_folder), SIZE, 10, seed=4, split="test", need_labels=None)
    assert first.used == again.used and np.array_equal(first.images, again.images)
    assert first.used != other.used
    assert len(set(first.used)) == 10 and first.used == sorted(first.used, key=first.files.index)
    assert "10 of 40 images" in first.note and "drawn with the seed" in first.note
    whole = load_gaze_data(str(mixed_folder), SIZE, 100, seed=3, need_labels=None)
    assert len(whole) == 40 and len(set(whole.used)) == 40
    assert "all 40 images" in whole.note and "fewer than the 100 samples to draw" in whole.note


def test_subfolders_are_searched_hidden_entries_and_other_files_skipped(tmp_path):
    folder = tmp_path / "faces"
    _faces(folder / "b", 2, 24, seed=1)
    _faces(folder / "a" / "deeper", 2, 24, seed=2, suffix=".JPG")
    _faces(folder / ".thumbnails", 3, 24, seed=3)
    _save(folder / ".hidden.png", np.zeros((24, 24, 3), np.uint8))
    (folder / "notes.txt").write_text("not a face")
    (folder / "scan.json").write_text("{}")
    names = [p.relative_to(folder).as_posix() for p in list_images(folder)]
    assert names == ["a/deeper/s24-2-000.JPG", "a/deeper/s24-2-001.JPG", "b/s24-1-000.png", "b/s24-1-001.png"]


def test_dataset_layouts_are_not_taken_for_plain_folders(tmp_path):
    folder = tmp_path / "labelled"
    faces = _faces(folder, 3, 24, seed=1)
    names = sorted(p.name for p in folder.iterdir())
    (folder / "labels.csv").write_text("image,subject,pitch,yaw\n"
                                       + "".join(f"{n},s{i},0.1,-0.2\n" for i, n in enumerate(names)))
    assert source_kind(str(folder)) == "dataset"
    data = load_gaze_data(str(folder), 24)
    assert not isinstance(data, ImageFolderDataset) and data.labelled
    np.testing.assert_allclose(data.gaze, [[0.1, -0.2]] * 3)
    np.testing.assert_array_equal(data.images, faces)


def test_commands_that_need_labels_refuse_a_plain_folder(mixed_folder, tiny_bundle, tmp_path, capsys):
    from securegaze.evaluation import evaluate_model_file
    from securegaze.scan_runs import MitigationRun

    with pytest.raises(DatasetError, match=r"faces \(a plain image folder\): the images have no gaze labels, "
                                           r"and this command needs labelled data"):
        load_gaze_data(str(mixed_folder), SIZE)  # labels needed unless the caller says otherwise
    unlabelled = load_gaze_data(str(mixed_folder), SIZE, need_labels=None)
    with pytest.raises(DatasetError, match="securegaze evaluate needs labelled data"):
        evaluate_model_file(tiny_bundle, lambda size: unlabelled)
    with pytest.raises(DatasetError, match="mitigate --true-labels needs labelled data"):
        MitigationRun.prepare(tiny_bundle, tmp_path / "mitigated", clean=str(mixed_folder), samples=40,
                              true_labels=True)
    with pytest.raises(DatasetError, match="mitigate --test .* needs labelled data"):
        MitigationRun.prepare(tiny_bundle, tmp_path / "mitigated", clean="synthetic", samples=40,
                              test=str(mixed_folder))
    code = sg_main(["evaluate", str(tiny_bundle), "--data", str(mixed_folder), "--samples", "8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and "no gaze labels" in err[0]


def test_empty_corrupt_tiny_and_too_few_are_one_clear_line_each(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("faces go here")
    with pytest.raises(DatasetError, match=r"empty: no PNG/JPEG images found \(expected face crops") as e:
        load_gaze_data(str(empty), SIZE, need_labels=None)
    assert "\n" not in str(e.value)

    corrupt = tmp_path / "corrupt"
    _faces(corrupt, 40, 24, seed=1)
    (corrupt / "s24-1-007.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(InputFileError, match=r"s24-1-007\.png: not a readable PNG/JPEG image") as e:
        load_image_folder(corrupt, SIZE)
    assert "\n" not in str(e.value)

    zero = tmp_path / "zero"
    _faces(zero, 40, 24, seed=1)
    (zero / "s24-1-011.png").write_bytes(b"")
    with pytest.raises(InputFileError, match=r"s24-1-011\.png: an empty file \(0 bytes\), not a PNG/JPEG image"):
        load_image_folder(zero, SIZE)

    truncated = tmp_path / "truncated"
    _faces(truncated, 40, 64, seed=2, suffix=".jpg")
    victim = truncated / "s64-2-003.jpg"
    victim.write_bytes(victim.read_bytes()[:300])
    with pytest.raises(InputFileError, match=r"s64-2-003\.jpg: not a readable PNG/JPEG image"):
        load_image_folder(truncated, SIZE)

    tiny = tmp_path / "tiny"
    _faces(tiny, 40, 24, seed=1)
    _save(tiny / "thumb.png", np.full((MIN_SIDE - 4, 40, 3), 128, np.uint8))
    with pytest.raises(DatasetError, match=rf"thumb\.png: 40x{MIN_SIDE - 4} px is too small .* {MIN_SIDE} px"):
        load_image_folder(tiny, SIZE)

    few = tmp_path / "few"
    _faces(few, 5, 24, seed=1)
    with pytest.raises(DatasetError, match=r"few: 5 image\(s\) found, but at least 32 are needed"):
        load_image_folder(few, SIZE)
    assert len(load_image_folder(few, SIZE, minimum=5)) == 5


def test_identity_names_the_folder_content(tmp_path):
    folder = tmp_path / "faces"
    _faces(folder, 4, 24, seed=1)
    identity = clean_set_identity(folder)
    assert identity.startswith(f"folder:{folder.resolve()} n=4 sha256=") and len(identity.split("sha256=")[1]) == 64
    assert clean_set_identity(folder) == identity
    first = folder / "s24-1-000.png"
    data = bytearray(first.read_bytes())
    data[-20] ^= 1
    first.write_bytes(bytes(data))
    edited = clean_set_identity(folder)
    assert edited != identity
    first.rename(folder / "renamed.png")
    assert clean_set_identity(folder) not in (identity, edited)
    _faces(folder, 1, 24, seed=9)
    assert " n=5 " in clean_set_identity(folder)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """An untrained width-8 small CNN at 32 px as an ONNX bundle (the scan needs no trained model to run)."""
    from securegaze.bundle import export_bundle
    from securegaze.models import create_model

    out = tmp_path_factory.mktemp("image-folder-model") / "tiny"
    torch.manual_seed(0)
    export_bundle(create_model("small_cnn", input_size=SIZE, width=8).eval(), out, "tiny-untrained")
    return out


def test_cli_scan_refuses_too_few_images_naming_both_counts(tiny_bundle, tmp_path, capsys):
    folder = tmp_path / "faces"
    _faces(folder, SCAN_MINIMUM - 2, 48, seed=1)
    code = sg_main(["scan", str(tiny_bundle), "--clean", str(folder), "--samples", "64", "--out", str(tmp_path / "scan")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"{SCAN_MINIMUM - 2} image(s) found, but at least {SCAN_MINIMUM} are needed" in err[0]
    assert f"min_clean = {SCAN_MINIMUM}" in err[0]
    assert not (tmp_path / "scan" / "report.json").exists()


def test_cli_scan_runs_on_a_plain_folder_and_records_its_identity(mixed_folder, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "scan"
    code = sg_main(["scan", str(tiny_bundle), "--clean", str(mixed_folder), "--samples", "36", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code in (0, 10), printed
    assert printed.count("clean set:") == 1 and "36 of 40 images" in printed
    assert "warning: " not in printed.split("clean set:")[1].split("\n")[1]  # face crops: no photo warning
    assert "warp branch: not run: at 32 px" in printed  # its budget, 2 % of the side, is under a pixel
    flat = "".join(printed.split())  # the console wraps long lines
    found, cheapest = "recoveredtarget(pitch,yaw)" in flat, "cheapestcollapsefound(pitch,yaw)" in flat
    assert (found, cheapest) == ((True, False) if code == 10 else (False, True)), printed  # no target when clean
    report = json.loads((out / "report.json").read_text())
    assert report["clean_count"] == 36 and report["input_size"] == SIZE
    record = report["details"]["clean_set"]
    assert record["identity"] == clean_set_identity(mixed_folder) and record["labelled"] is False
    assert record["count"] == 36 and record["note"].startswith("clean set: 36 of 40 images")
