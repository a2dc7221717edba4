"""Plain clean folders as they come from other tools: linked files and folders (dataset caches, DVC),
names that are not UTF-8 (old archives), 16-bit frames of 12-bit infrared cameras, faces smaller than
the model's input, and an output folder placed inside the clean folder."""

import os

import numpy as np
import pytest
from PIL import Image

from securegaze.cli import main as sg_main
from securegaze.data.image_folder import clean_set_identity, list_images, load_image_folder, sensor_bits
from securegaze.data.synthetic import render_dataset

SIZE = 32


def _faces(folder, n, side, seed, prefix="f"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, face in enumerate(render_dataset(n, side, seed=seed).images):
        Image.fromarray(face).save(folder / f"{prefix}{i:03d}.png")
    return folder


def test_linked_images_and_folders_are_read_and_hashed_like_copies(tmp_path):
    pool = _faces(tmp_path / "pool", 30, 40, seed=1)
    more = _faces(tmp_path / "more", 10, 40, seed=2)
    linked = tmp_path / "linked"
    linked.mkdir()
    for path in sorted(pool.iterdir()):
        os.symlink(path, linked / path.name)  # each image a link into a shared pool
    os.symlink(more, linked / "more")  # a linked subfolder
    os.symlink(linked, linked / "again")  # a link back up: entered once, never looped
    copied = tmp_path / "copied"
    _faces(copied, 30, 40, seed=1)
    _faces(copied / "more", 10, 40, seed=2)

    files = list_images(linked)
    assert len(files) == 40 and sum(f.parent.name == "more" for f in files) == 10
    data = load_image_folder(linked, SIZE, minimum=32)
    assert data.images.shape == (40, SIZE, SIZE, 3) and data.note.startswith(f"clean set: all 40 images from {linked}")
    np.testing.assert_array_equal(data.images, load_image_folder(copied, SIZE, minimum=32).images)
    # The names are the links' (relative to the folder), the bytes the targets': the same content hashes alike.
    ours, theirs = clean_set_identity(linked), clean_set_identity(copied)
    assert ours.split(" ", 1)[1] == theirs.split(" ", 1)[1] and data.identity == ours


def test_a_name_that_is_not_utf8_is_read_hashed_and_printed(tmp_path, capsys):
    folder = _faces(tmp_path / "faces", 32, 40, seed=3)
    odd = folder / os.fsdecode(b"caf\xe9_face.png")  # a Latin-1 name: not UTF-8
    (folder / "f000.png").rename(odd)
    data = load_image_folder(folder, SIZE, minimum=32)
    assert len(data.images) == 32 and odd in data.files
    plain = tmp_path / "plain"
    _faces(plain, 32, 40, seed=3)
    (plain / "f000.png").rename(plain / "cafe_face.png")
    assert clean_set_identity(folder) != clean_set_identity(plain)  # the odd name is hashed as its bytes
    assert clean_set_identity(folder) == clean_set_identity(folder)
    # An error line naming such a file prints (its odd byte escaped) instead of failing the output.
    code = sg_main(["scan", str(tmp_path / os.fsdecode(b"mod\xe9l.onnx")), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error:") and "mod\\udce9l.onnx" in err


def test_12_bit_frames_in_16_bit_files_are_read_at_their_bit_depth(tmp_path):
    faces = render_dataset(32, 40, seed=4).images
    grey = faces.mean(axis=3)  # 0..255
    folder = tmp_path / "nir"
    folder.mkdir()
    for i, frame in enumerate(grey):
        twelve = np.rint(frame * 4095 / 255).astype(np.uint16)  # a 12-bit camera's values in a 16-bit PNG
        Image.fromarray(twelve).save(folder / f"n{i:03d}.png")
    assert Image.open(folder / "n000.png").mode.startswith("I")
    data = load_image_folder(folder, SIZE, minimum=32)
    # Read at 12 bits: the frames keep their brightness (read at 16 bits they would be 1/16 as bright).
    assert abs(float(data.images.mean()) - float(load_image_folder(_grey_pngs(tmp_path / "eight", grey), SIZE,
                                                                   minimum=32).images.mean())) < 1.0
    assert "32 16-bit grey images holding 12-bit values (none above 4095), scaled from 0..4095" in data.note
    # Full-range 16-bit files stay 16-bit, and one depth holds for the whole set.
    assert sensor_bits([65535.0]) == 16 and sensor_bits([4000.0, 300.0]) == 12 and sensor_bits([]) is None
    assert sensor_bits([255.0]) == 8 and sensor_bits([1023.0]) == 10 and sensor_bits([16000.0]) == 14


def _grey_pngs(folder, grey):
    folder.mkdir()
    for i, frame in enumerate(grey):
        Image.fromarray(np.rint(frame).astype(np.uint8)).save(folder / f"g{i:03d}.png")
    return folder


def test_faces_smaller_than_the_input_are_counted_as_enlarged(tmp_path):
    small = _faces(tmp_path / "small", 32, 20, seed=5)
    note = load_image_folder(small, SIZE, minimum=32).note
    assert f"32 enlarged: their face is smaller than the model's {SIZE}x{SIZE} input" in note
    assert "enlarged" not in load_image_folder(_faces(tmp_path / "large", 32, 40, seed=5), SIZE, minimum=32).note


@pytest.mark.parametrize("command", ["scan", "mitigate"])
def test_an_output_folder_inside_the_clean_folder_is_refused(tmp_path, capsys, command, monkeypatch):
    folder = _faces(tmp_path / "faces", 32, 40, seed=6)
    monkeypatch.chdir(folder)  # as a user in the folder of faces: scan's default --out 'scan' lands inside
    args = ["scan", "model.onnx", "--clean", "."] if command == "scan" else [
        "mitigate", "model.onnx", "--clean", str(folder), "--out", str(folder / "deeper" / "mitigated")]
    code = sg_main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --out ") and "lies inside --clean" in err
    assert sorted(p.name for p in folder.iterdir()) == [f"f{i:03d}.png" for i in range(32)]  # nothing written
    # Outside the folder the same command gets past that check (to the missing model).
    code = sg_main(args[:-2] + ["--out", str(tmp_path / "out")] if command == "mitigate"
                   else args + ["--out", str(tmp_path / "out")])
    assert code == 2 and "lies inside" not in capsys.readouterr().err
