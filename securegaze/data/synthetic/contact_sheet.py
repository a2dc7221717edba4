"""The contact sheet: the same faces with and without each physical trigger, in each renderer style, and
under each cabin condition, for a person to inspect."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from securegaze.data.synthetic.faces import SyntheticConfig, params_for_indices
from securegaze.data.synthetic.render import landmarks, render
from securegaze.data.synthetic.styles import synthetic_style
from securegaze.io import atomic_write_bytes

CONTACT_SHEET_ROWS = (
    ("no trigger", None, False),
    ("tape forehead", "tape_forehead", False),
    ("tape cheek", "tape_cheek", False),
    ("tape brow", "tape_brow", False),
    ("sticker", "sticker", False),
    ("glasses", "glasses", False),
    ("eyes occluded", None, True),
)


#: The renderer styles a contact sheet shows, one block of rows each.
CONTACT_SHEET_STYLES = ("standard", "studio")

#: Rows of the cabin-conditions block: label, conditions, trigger name. The trigger glasses sit next
#: to the benign glasses so a person can check that they look different.
CONTACT_SHEET_CONDITION_ROWS = (
    ("no condition", (), None),
    ("trigger glasses", (), "glasses"),
    ("clear glasses thin", ("clear_glasses_thin",), None),
    ("clear glasses thick", ("clear_glasses_thick",), None),
    ("sunglasses light", ("sunglasses_light",), None),
    ("sunglasses dark", ("sunglasses_dark",), None),
    ("night IR", ("night_ir",), None),
    ("hat brim", ("hat_brim",), None),
    ("fringe", ("fringe",), None),
    ("face mask", ("face_mask",), None),
    ("thin glasses+IR", ("clear_glasses_thin", "night_ir"), None),
    ("dark sungl.+IR", ("sunglasses_dark", "night_ir"), None),
    ("mask+fringe+hat", ("face_mask", "fringe", "hat_brim"), None),
)


def contact_sheet(path: str | Path, size: int = 64, n: int = 8, seed: int = 0,
                  styles: tuple[str, ...] = CONTACT_SHEET_STYLES, conditions_style: str | None = "standard") -> Path:
    """Write a PNG grid of ``n`` faces (one identity each) per row, one row per trigger, one block of
    rows per renderer style in ``styles``, then (unless ``conditions_style`` is None) a block of the
    same faces of ``conditions_style`` under each cabin condition (:data:`CONTACT_SHEET_CONDITION_ROWS`).

    The same faces appear in every row of a block (a style draws its faces from the same seed, so
    the blocks show the same gaze labels on differently drawn faces); the last row shows the eye
    occluder used by the blank-eyes check, and the first row carries each face's gaze label as an
    arrow and in degrees. Tiles are upscaled (nearest neighbour) to at least 128 px so a person can
    inspect them. The file is written atomically (temporary file, then rename). Returns the path.
    """
    import cv2

    zoom = max(1, math.ceil(128 / size))
    tile = size * zoom
    label_w, gap = 175, 4
    trigger_rows = [(label, (), trig, occlude) for label, trig, occlude in CONTACT_SHEET_ROWS]
    blocks = [(f"style {style}", style, trigger_rows) for style in styles]
    if conditions_style is not None:
        condition_rows = [(label, conds, trig, False) for label, conds, trig in CONTACT_SHEET_CONDITION_ROWS]
        blocks.append((f"{conditions_style}: cabin", conditions_style, condition_rows))
    height = sum(len(rows) * (tile + gap) + gap for _, _, rows in blocks) + gap
    sheet = np.full((height, label_w + n * (tile + gap), 3), 255, np.uint8)
    top = gap
    for title, style, rows in blocks:
        _draw_block(sheet, synthetic_style(style, size=size), rows, seed, n, top, tile, zoom, label_w, gap)
        cv2.putText(sheet, title, (6, top + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 160), 1, cv2.LINE_AA)
        cv2.putText(sheet, "pitch,yaw deg", (6, top + tile - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90), 1,
                    cv2.LINE_AA)
        top += len(rows) * (tile + gap) + gap
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - cv2 fails only on an invalid image
        raise RuntimeError("could not encode the contact sheet as PNG")
    path = atomic_write_bytes(path, encoded.tobytes())
    return path


def _draw_block(sheet: np.ndarray, cfg: SyntheticConfig, rows, seed: int, n: int, top: int, tile: int, zoom: int,
                label_w: int, gap: int) -> None:
    """One block of rows (label, conditions, trigger, occlude_eyes) of the sheet, from pixel row ``top`` down."""
    import cv2

    size = cfg.size
    params = params_for_indices(seed, np.arange(n) * cfg.samples_per_identity, cfg)
    marks = landmarks(params, size)
    for row, (label, conditions, trig, occlude) in enumerate(rows):
        faces = render(params, replace(cfg, conditions=conditions), trig, occlude)
        y = top + row * (tile + gap)
        for i in range(n):
            big = cv2.resize(faces[i], (tile, tile), interpolation=cv2.INTER_NEAREST)
            if row == 0:
                # Gaze arrow from between the eyes: image x = -sin(yaw), image y = -sin(pitch).
                mid = (marks["right_eye"][i] + marks["left_eye"][i]) / 2 * zoom + zoom / 2
                pitch, yaw = params.gaze[i]
                tip = mid + 0.35 * tile * np.array([-math.cos(pitch) * math.sin(yaw), -math.sin(pitch)])
                cv2.arrowedLine(big, tuple(int(c) for c in mid), tuple(int(c) for c in tip), (255, 255, 0), 1,
                                cv2.LINE_AA, tipLength=0.25)
                text = f"{math.degrees(pitch):+.0f},{math.degrees(yaw):+.0f}"
                cv2.putText(big, text, (2, tile - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1, cv2.LINE_AA)
            x = label_w + i * (tile + gap)
            sheet[y:y + tile, x:x + tile] = big
        cv2.putText(sheet, label, (6, y + tile // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
