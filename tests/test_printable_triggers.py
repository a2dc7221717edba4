"""Printable triggers: the page and the trigger on it are at true physical size, in mm."""

import re
import zlib

import numpy as np
import pytest
from PIL import Image

from securegaze.cli import main
from securegaze.data.printable_triggers import PAPER_MM, plan_layout, trigger_for_kind, write_trigger_page
from securegaze.data.triggers import ASSUMED_IPD_MM, Glasses
from securegaze.errors import ConfigError

PT_PER_MM = 72 / 25.4


def _pdf_page_and_image_mm(path):
    """(page (w, h) mm from the MediaBox, (w, h) mm of the one embedded image from its placement matrices)."""
    data = path.read_bytes()
    box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]*)\]", data).group(1).split()]
    placements = []
    for m in re.finditer(rb"stream\r?\n(.*?)endstream", data, re.S):
        try:
            content = zlib.decompressobj().decompress(m.group(1))
        except zlib.error:
            continue  # the image data itself, or a font
        for segment in re.findall(rb"q ((?:(?!\bQ\b).)*?)/I\d+ Do", content, re.S):
            matrix = np.eye(3)
            for nums in re.findall(rb"((?:-?[\d.]+\s+){6})cm", segment):
                a, b, c, d, e, f = (float(v) for v in nums.split())
                matrix = np.array([[a, b, 0], [c, d, 0], [e, f, 1]]) @ matrix
            placements.append(matrix)
    assert len(placements) == 1, f"expected one embedded trigger image, found {len(placements)}"
    unit_square = placements[0]
    width_pt = np.hypot(unit_square[0, 0], unit_square[0, 1])
    height_pt = np.hypot(unit_square[1, 0], unit_square[1, 1])
    page = ((box[2] - box[0]) / PT_PER_MM, (box[3] - box[1]) / PT_PER_MM)
    return page, (width_pt / PT_PER_MM, height_pt / PT_PER_MM)


@pytest.mark.parametrize("kind", ["tape", "sticker", "glasses"])
def test_pdf_page_and_trigger_are_true_size(kind, tmp_path):
    out = tmp_path / f"{kind}.pdf"
    assert main(["triggers", "print", "--kind", kind, "--out", str(out)]) == 0
    page, image = _pdf_page_and_image_mm(out)
    assert page == pytest.approx(PAPER_MM["a4"], abs=0.01)
    # The same object the attack trains with: its size_mm is what is printed.
    assert image == pytest.approx(trigger_for_kind(kind).size_mm(), abs=0.01)


def test_pdf_scaled_for_a_participants_ipd(tmp_path):
    out = tmp_path / "tape-70.pdf"
    assert main(["triggers", "print", "--kind", "tape", "--out", str(out), "--ipd-mm", "70", "--paper", "letter"]) == 0
    page, image = _pdf_page_and_image_mm(out)
    assert page == pytest.approx(PAPER_MM["letter"], abs=0.01)
    assert image == pytest.approx((50.0 * 70 / ASSUMED_IPD_MM, 12.0 * 70 / ASSUMED_IPD_MM), abs=0.01)


@pytest.mark.parametrize("kind", ["sticker", "glasses"])
def test_png_pixels_measure_the_trigger_in_mm(kind, tmp_path):
    dpi = 200
    out = tmp_path / f"{kind}.png"
    layout = write_trigger_page(kind, out, dpi=dpi)
    image = np.asarray(Image.open(out).convert("L"), dtype=np.float32)
    # Agg truncates the page to whole pixels (under one pixel, 0.13 mm at 200 dpi, short).
    assert image.shape == (int(297 / 25.4 * dpi), int(210 / 25.4 * dpi))
    assert Image.open(out).info["dpi"] == pytest.approx((dpi, dpi), abs=0.01)  # printers read it
    # Dark ink (the sticker's black cells, the glasses' rims) inside the trigger's rows: its extent in px.
    x0, y0, x1, y1 = layout.trigger_box
    rows = slice(int(y0 / 25.4 * dpi) - 5, int(y1 / 25.4 * dpi) + 5)
    ink = image[rows] < 100
    cols = np.flatnonzero(ink.any(axis=0))
    lines = np.flatnonzero(ink.any(axis=1))
    w_mm = (cols[-1] - cols[0] + 1) / dpi * 25.4
    h_mm = (lines[-1] - lines[0] + 1) / dpi * 25.4
    # The sticker's 3x3 checker has dark corner cells and the glasses' rims reach the frame's edges,
    # so the ink spans the whole definition.
    assert (w_mm, h_mm) == pytest.approx(trigger_for_kind(kind).size_mm(), abs=0.3)
    # The scale bar: 50 mm of solid black.
    bx0, by0, bx1, by1 = layout.scale_bar
    bar_row = image[int((by0 + by1) / 2 / 25.4 * dpi)]
    black = np.flatnonzero(bar_row < 60)
    assert (black[-1] - black[0] + 1) / dpi * 25.4 == pytest.approx(50.0, abs=0.3)


def test_bad_input(tmp_path, capsys):
    assert main(["triggers", "print", "--kind", "hat", "--out", str(tmp_path / "x.pdf")]) == 2
    assert main(["triggers", "print", "--kind", "tape", "--out", str(tmp_path / "x.svg")]) == 2
    assert main(["triggers", "print", "--kind", "tape", "--out", str(tmp_path / "x.pdf"), "--ipd-mm", "20"]) == 2
    err = capsys.readouterr().err
    assert "error: --kind must be one of tape, sticker, glasses" in err and ".pdf or .png" in err and "--ipd-mm 20" in err
    assert not list(tmp_path.iterdir())  # nothing half-written
    with pytest.raises(ConfigError, match="does not fit on a4"):
        plan_layout(Glasses(lens_width_mm=100, bridge_mm=40), "a4")  # 256 mm wide
