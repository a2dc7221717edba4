"""The calibration board: its spelling, its picture, finding it in a frame, and its printable page.

A board is a grid of ``cols`` x ``rows`` squares of ``square_mm`` (the printed size):

* ``chessboard``: plain black and white squares; OpenCV finds its ``(cols - 1) x (rows - 1)``
  inner corners (``findChessboardCornersSB``), only when the whole board is in view;
* ``charuco``: a chessboard with an ArUco marker (``marker_mm``, dictionary ``dictionary``) in
  every white square, so each inner corner is identified on its own: a board half out of the
  frame still gives its visible corners, which is how views reach the frame's corners.

On the command line a board is spelled ``chessboard:COLSxROWS:SQUARE_MM`` or
``charuco:COLSxROWS:SQUARE_MM:MARKER_MM[:DICTIONARY]`` (:meth:`BoardSpec.parse`), e.g. the default
``charuco:8x6:25:18:DICT_4X4_50`` (200 x 150 mm, 35 inner corners, 24 markers; at 640x480 and
40 cm each marker cell is about 5 px, enough to decode). ``edge-app calibrate board`` prints it
on A4 or letter, landscape, at true size with a 50-mm scale bar; a printer that scaled the page is
caught with a ruler, and the measured square goes to ``calibrate camera --square-mm``.

Board coordinates: millimetres, origin at the top-left corner of the top-left square, x along the
columns, y down the rows, z = 0 on the board (OpenCV's convention for both kinds).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

import cv2
import numpy as np

from securegaze.errors import ConfigError

KINDS = ("chessboard", "charuco")
DEFAULT_BOARD = "charuco:8x6:25:18:DICT_4X4_50"
#: Fewest ChArUco corners that make a view (fewer leave the pose poorly constrained).
MIN_CHARUCO_CORNERS = 8
#: Board picture resolution on the page, px per mm (254 dpi; squares and marker cells stay sharp
#: because the picture is embedded without resampling).
PAGE_PX_PER_MM = 10.0
#: Landscape page margins around the board, mm: label above, scale bar and advice below.
BOARD_TOP_MM = 24.0
BOARD_BELOW_MM = 34.0
BOARD_SIDE_MM = 10.0
_SPEC = re.compile(r"^(chessboard|charuco):(\d+)x(\d+):([\d.]+)(?::([\d.]+))?(?::(DICT_\w+))?$")


@dataclass(frozen=True)
class BoardDetection:
    """The board in one frame: ``image_points`` (N, 2) float32 px and the matching
    ``object_points`` (N, 3) float32 mm on the board."""

    image_points: np.ndarray
    object_points: np.ndarray


@dataclass(frozen=True)
class BoardSpec:
    """A board (see the module docstring); lengths in mm."""

    kind: str
    cols: int
    rows: int
    square_mm: float
    marker_mm: float | None = None
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"board kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not (3 <= self.cols <= 40 and 3 <= self.rows <= 40):
            raise ConfigError(f"board {self.cols}x{self.rows}: expected 3..40 squares each way")
        if not 2.0 <= self.square_mm <= 200.0:
            raise ConfigError(f"board square {self.square_mm:g} mm is outside 2..200 mm")
        if self.kind == "charuco":
            if self.marker_mm is None or not 0.3 * self.square_mm <= self.marker_mm <= 0.9 * self.square_mm:
                raise ConfigError(f"charuco marker size {self.marker_mm} mm must be 0.3-0.9 of the "
                                  f"{self.square_mm:g}-mm square")
            if not hasattr(cv2.aruco, self.dictionary):
                raise ConfigError(f"ArUco dictionary {self.dictionary!r} is not one of OpenCV's (e.g. DICT_4X4_50)")
            needed = self.cols * self.rows // 2
            size = re.search(r"_(\d+)$", self.dictionary)
            if size and needed > int(size.group(1)):
                raise ConfigError(f"a {self.cols}x{self.rows} ChArUco board needs {needed} markers; "
                                  f"{self.dictionary} has {size.group(1)}")

    @staticmethod
    def parse(text: str) -> BoardSpec:
        """A board from its spelling, e.g. ``charuco:8x6:25:18`` or ``chessboard:9x7:20``."""
        m = _SPEC.match(text.strip())
        expected = ("expected chessboard:COLSxROWS:SQUARE_MM or charuco:COLSxROWS:SQUARE_MM:MARKER_MM"
                    "[:DICTIONARY], e.g. " + DEFAULT_BOARD)
        if not m:
            raise ConfigError(f"--board {text!r}: {expected}")
        kind, cols, rows, square, marker, dictionary = m.groups()
        if (kind == "charuco") != (marker is not None):
            raise ConfigError(f"--board {text!r}: {expected}")
        try:
            return BoardSpec(kind, int(cols), int(rows), float(square), float(marker) if marker else None,
                             dictionary or "DICT_4X4_50")
        except ValueError:
            raise ConfigError(f"--board {text!r}: {expected}") from None

    def with_square(self, square_mm: float | None) -> BoardSpec:
        """The same board as printed with squares of ``square_mm`` (a printer's scaling measured with a
        ruler scales the markers alike)."""
        if square_mm is None:
            return self
        marker = None if self.marker_mm is None else self.marker_mm * square_mm / self.square_mm
        return replace(self, square_mm=float(square_mm), marker_mm=marker)

    @property
    def text(self) -> str:
        """The spelling that :meth:`parse` reads back."""
        base = f"{self.kind}:{self.cols}x{self.rows}:{self.square_mm:g}"
        return base if self.kind == "chessboard" else f"{base}:{self.marker_mm:g}:{self.dictionary}"

    @property
    def size_mm(self) -> tuple[float, float]:
        return self.cols * self.square_mm, self.rows * self.square_mm

    @property
    def inner_corners(self) -> int:
        return (self.cols - 1) * (self.rows - 1)

    def describe(self) -> str:
        w, h = self.size_mm
        what = (f"ChArUco board {self.cols} x {self.rows} squares of {self.square_mm:g} mm, markers "
                f"{self.marker_mm:g} mm ({self.dictionary})" if self.kind == "charuco"
                else f"chessboard {self.cols} x {self.rows} squares of {self.square_mm:g} mm")
        return f"{what}, {w:g} x {h:g} mm, {self.inner_corners} inner corners"

    def charuco_board(self):
        """OpenCV's ``cv2.aruco.CharucoBoard`` of this board (mm units)."""
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.cols, self.rows), self.square_mm, self.marker_mm, dictionary)

    def corner_points_mm(self) -> np.ndarray:
        """(N, 3) float32 inner corners in the order of the detectors, board mm."""
        if self.kind == "charuco":
            return np.asarray(self.charuco_board().getChessboardCorners(), dtype=np.float32).reshape(-1, 3)
        nx, ny = self.cols - 1, self.rows - 1
        grid = np.mgrid[1:nx + 1, 1:ny + 1].T.reshape(-1, 2).astype(np.float32) * self.square_mm
        return np.hstack([grid, np.zeros((len(grid), 1), np.float32)])

    def image(self, px_per_mm: float) -> np.ndarray:
        """(H, W) uint8 picture of the board alone (edge to edge, no margin), ``px_per_mm`` px a mm."""
        w_mm, h_mm = self.size_mm
        size = (int(round(w_mm * px_per_mm)), int(round(h_mm * px_per_mm)))
        if self.kind == "charuco":
            return self.charuco_board().generateImage(size, marginSize=0, borderBits=1)
        ys = (np.arange(size[1]) + 0.5) / px_per_mm // self.square_mm
        xs = (np.arange(size[0]) + 0.5) / px_per_mm // self.square_mm
        black = (ys[:, None] + xs[None, :]) % 2 == 0  # the top-left square is black, like OpenCV's
        return np.where(black, 0, 255).astype(np.uint8)

    def detect(self, image: np.ndarray) -> BoardDetection | None:
        """The board's inner corners in a BGR or grey frame, or None when it is not found (a
        chessboard must be wholly in view; a ChArUco board needs ``MIN_CHARUCO_CORNERS`` corners
        not all on one line)."""
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if self.kind == "chessboard":
            flags = cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_ACCURACY
            found, corners = cv2.findChessboardCornersSB(gray, (self.cols - 1, self.rows - 1), flags)
            if not found:
                return None
            return BoardDetection(corners.reshape(-1, 2).astype(np.float32), self.corner_points_mm())
        corners, ids, _, _ = cv2.aruco.CharucoDetector(self.charuco_board()).detectBoard(gray)
        if ids is None or len(ids) < MIN_CHARUCO_CORNERS:
            return None
        obj = self.corner_points_mm()[ids.reshape(-1)]
        spread = np.linalg.eigvalsh(np.cov(obj[:, :2].T))
        if spread[0] < (self.square_mm / 2) ** 2:  # all on (nearly) one line: no plane to fit
            return None
        return BoardDetection(corners.reshape(-1, 2).astype(np.float32), obj.astype(np.float32))


# -- the printable page ------------------------------------------------------------------------------
def board_page_layout(board: BoardSpec, paper: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """(page (w, h) mm landscape, board top-left (x, y) mm); ConfigError if the board does not fit."""
    from securegaze.data.printable_triggers import PAPER_MM

    if paper not in PAPER_MM:
        raise ConfigError(f"--paper must be one of {', '.join(PAPER_MM)}, got {paper!r}")
    page_h, page_w = PAPER_MM[paper]  # landscape
    w, h = board.size_mm
    if w > page_w - 2 * BOARD_SIDE_MM or h > page_h - BOARD_TOP_MM - BOARD_BELOW_MM:
        raise ConfigError(f"{board.describe()}: does not fit on landscape {paper} ({page_w:g} x {page_h:g} mm) "
                          f"with its margins; at most {page_w - 2 * BOARD_SIDE_MM:g} x "
                          f"{page_h - BOARD_TOP_MM - BOARD_BELOW_MM:g} mm")
    return (page_w, page_h), ((page_w - w) / 2, BOARD_TOP_MM)


def write_board_page(board: BoardSpec, out: str | os.PathLike, paper: str = "a4", dpi: int = 300) -> str:
    """Write the board's page (``.pdf`` vector page with the board embedded unresampled, or ``.png``
    at ``dpi``) atomically; returns the label printed on it."""
    from matplotlib.patches import Rectangle

    from securegaze.data.printable_triggers import (
        SCALE_BAR_MM,
        draw_scale_bar,
        page_figure,
        page_format,
        save_page,
    )

    page_format(out)
    page, (x0, y0) = board_page_layout(board, paper)
    w, h = board.size_mm
    fig, ax = page_figure(page)
    ax.imshow(board.image(PAGE_PX_PER_MM), cmap="gray", vmin=0, vmax=255, extent=(x0, x0 + w, y0 + h, y0),
              interpolation="none", zorder=2)
    ax.add_patch(Rectangle((x0, y0), w, h, fill=False, linewidth=0.3, edgecolor="0.6", zorder=3))
    label = f"SecureGaze Edge camera calibration: {board.describe()}"
    ax.text(page[0] / 2, 9.0, label, ha="center", va="center", fontsize=8)
    ax.text(page[0] / 2, 15.5, f"edge-app calibrate camera --board {board.text}  (measure one square; if it is not "
            f"{board.square_mm:g} mm, add --square-mm MEASURED)", ha="center", va="center", fontsize=7,
            color="0.3", family="monospace")
    bar_y = y0 + h + 8.0
    bar = ((page[0] - SCALE_BAR_MM) / 2, bar_y, (page[0] + SCALE_BAR_MM) / 2, bar_y + 2.5)
    draw_scale_bar(ax, bar, page[0] / 2)
    save_page(fig, out, dpi, label)
    return label


# -- synthetic views (tests, benchmarks) --------------------------------------------------------------
def pixel_rays(camera_matrix: np.ndarray, dist_coeffs, size: tuple[int, int], supersample: int = 2) -> np.ndarray:
    """(H*s * W*s, 2) normalised image coordinates (x/z, y/z) of the rays through ``supersample``^2
    points of every pixel of a ``size`` frame, lens distortion undone: what :func:`render_view`
    samples (the same for every pose, so computed once for many views)."""
    w, h = size
    s = supersample
    u, v = np.meshgrid((np.arange(w * s) + 0.5) / s - 0.5, (np.arange(h * s) + 0.5) / s - 0.5)
    pts = np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float64).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 1e-10)
    return cv2.undistortPointsIter(pts, np.asarray(camera_matrix, np.float64), np.asarray(dist_coeffs, np.float64),
                                   np.eye(3), np.eye(3), criteria).reshape(-1, 2)


def render_view(board: BoardSpec, camera_matrix: np.ndarray, dist_coeffs, rvec, tvec, size: tuple[int, int],
                seed: int = 0, px_per_mm: float = 8.0, supersample: int = 2, rays: np.ndarray | None = None
                ) -> np.ndarray:
    """(H, W, 3) uint8 BGR frame of the board (on white paper, one square of margin, on a grey desk)
    seen by a camera with these intrinsics and lens distortion, posed by ``rvec``, ``tvec`` (board
    mm -> camera mm, OpenCV's); each frame pixel averages ``supersample``^2 exact rays
    (:func:`pixel_rays`, pass them for many views), then blur and sensor noise. For checking a
    calibration against known intrinsics."""
    w, h = size
    s = supersample
    margin = board.square_mm
    picture = cv2.copyMakeBorder(board.image(px_per_mm), *(int(round(margin * px_per_mm)),) * 4,
                                 cv2.BORDER_CONSTANT, value=235)
    norm = pixel_rays(camera_matrix, dist_coeffs, size, s) if rays is None else rays
    rot, _ = cv2.Rodrigues(np.asarray(rvec, np.float64))
    plane = np.column_stack([rot[:, 0], rot[:, 1], np.asarray(tvec, np.float64).reshape(3)])
    board_h = np.linalg.inv(plane) @ np.vstack([norm.T, np.ones(len(norm))])
    with np.errstate(divide="ignore", invalid="ignore"):
        bx, by = board_h[0] / board_h[2], board_h[1] / board_h[2]
    behind = board_h[2] <= 0
    map_x = ((bx + margin) * px_per_mm - 0.5).astype(np.float32)
    map_y = ((by + margin) * px_per_mm - 0.5).astype(np.float32)
    map_x[behind] = -1e6
    sampled = cv2.remap(picture, map_x.reshape(h * s, w * s), map_y.reshape(h * s, w * s), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=90)
    frame = cv2.resize(sampled, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    frame = cv2.GaussianBlur(frame, (0, 0), 0.6)
    frame += np.random.default_rng(seed).normal(0.0, 2.0, frame.shape)
    return cv2.cvtColor(np.clip(frame, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def board_pose(board: BoardSpec, tilt_x_deg: float, tilt_y_deg: float, centre_mm,
               roll_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(rvec, tvec) of the board with its centre at ``centre_mm`` (camera frame), rolled by
    ``roll_deg`` in its plane, then turned ``tilt_y_deg`` about the camera's vertical axis and
    ``tilt_x_deg`` about its horizontal one from facing the camera."""
    ax, ay, az = np.radians(tilt_x_deg), np.radians(tilt_y_deg), np.radians(roll_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rot = ry @ rx @ rz
    half = np.array([*board.size_mm, 0.0]) / 2
    tvec = np.asarray(centre_mm, np.float64) - rot @ half
    return cv2.Rodrigues(rot)[0].reshape(3), tvec


def synthetic_views(board: BoardSpec, camera_matrix: np.ndarray, dist_coeffs, size: tuple[int, int], count: int = 14,
                    seed: int = 0, tilt_deg: float = 30.0, spread: float = 1.0) -> list[np.ndarray]:
    """``count`` rendered views (:func:`render_view`) of a hand-held board: its centre visits the
    frame's corners, edges and middle (``spread`` 1: reaching the corners, 0: all in the middle),
    at 330-480 mm, turned by up to ``tilt_deg`` about each axis and rolled by up to 10 deg
    (seeded); for tests and benchmarks of the calibration against known intrinsics."""
    rng = np.random.default_rng(seed)
    k = np.asarray(camera_matrix, np.float64)
    w, h = size
    places = [(0.28, 0.3), (0.72, 0.3), (0.28, 0.7), (0.72, 0.7), (0.5, 0.5), (0.5, 0.3), (0.5, 0.7), (0.3, 0.5),
              (0.7, 0.5)]
    images = []
    rays = pixel_rays(k, dist_coeffs, size)
    for i in range(count):
        fx, fy = 0.5 + spread * (np.asarray(places[i % len(places)]) - 0.5) + rng.uniform(-0.03, 0.03, 2)
        depth = float(rng.uniform(330.0, 480.0))
        centre = depth * (np.linalg.inv(k) @ np.array([fx * w, fy * h, 1.0]))
        sign = 1 if i % 2 else -1
        tx = sign * tilt_deg * float(rng.uniform(0.5, 1.0)) if i % 3 != 2 else 0.0
        ty = -sign * tilt_deg * float(rng.uniform(0.5, 1.0)) if i % 3 != 1 else 0.0
        rvec, tvec = board_pose(board, tx, ty, centre, float(rng.uniform(-10.0, 10.0)))
        images.append(render_view(board, k, dist_coeffs, rvec, tvec, size, seed=seed * 1000 + i, rays=rays))
    return images
