"""Driver selection: which of the faces in view is the driver (issue 18, item 2).

The face stage can return several faces (``face.max_faces``); the attention logic must follow the
driver's, never the passenger's. This stage chooses it from face boxes alone (pixels), so it is
pure logic, tested with scripted traces (``tests/test_driver_select.py``).

Which image side is the driver's. The camera faces the occupants (steering column, dashboard or
rear-view mirror), so it sees them as a person facing them does: the car's left appears on the
image's RIGHT. In a left-hand-drive car (``cabin.drive_side: left``) the driver sits on the car's
left, hence on the image's right; in a right-hand-drive car on the image's left. A camera whose
image is mirrored (``camera.mirrored: true``, as webcams often show a preview) swaps the two.
:func:`driver_image_side` is that mapping, written once.

How the driver is chosen, and why.

* **Acquisition** (at start, and again after the driver's face has been lost ``lost_after_s``):
  for ``window_s`` seconds the faces are tracked but no choice is final. A face that *stays*
  (present on at least ``min_presence`` of the frames of the last ``window_s``) is a candidate; a
  face that flickers in for a few frames (a false detection, someone passing the rear window) is
  not. The driver is the candidate furthest towards the driver's image side. Size is not used: a
  passenger can be nearer the camera than the driver (a camera on the passenger's side of the
  console, a passenger leaning in), and the driver's seat, not the face's size, defines the driver.
  During the window the frame's face furthest towards the driver side is monitored provisionally
  (``state`` "acquiring"), so the driver is watched from the first frame and a drive with one face
  gives the same records as before this stage existed.
* **One face only**: a face that stays alone is the driver wherever it is. On the driver's half of
  the image that is certain enough to keep (``state`` "tracked"). On the passenger's half it is kept
  only *provisionally* (``state`` "provisional"): with a camera on the steering column a driver
  leaning towards the console or a centrally mounted camera can put the driver's face across the
  middle, and a car with one person in it is driven by that person, so monitoring the face keeps the
  alerts working; but as soon as another face stays on its driver side, that face takes over (it was
  the passenger who was alone in view, e.g. before the driver sat down).
* **Stable identity**: once chosen, the driver is a track (face centre within ``max_jump`` face
  widths of the previous frame's, width within a factor of :data:`MAX_SIZE_CHANGE`), kept for as
  long as it is found. Another face that leans in, grows larger or moves across the image never
  takes its place; faces seen beside the tracked driver are remembered as passengers and are never
  chosen while their track lasts.
* **Lost driver**: while the driver's track is missing (up to ``lost_after_s``) no face is
  monitored (``state`` "lost"): the passenger's gaze must not stand in for a driver who turned away,
  and the attention logic counts a missing face as eyes off the road. After that the track is
  dropped and acquisition starts again with the same rules (a remembered passenger still
  excluded, so a driver who stays out of view is not replaced by the passenger).

Every frame's :class:`DriverChoice` says how many faces were in view, which one was chosen (its
track id and box) and why, and goes into the JSON line as ``driver_face``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from securegaze.validation import StrictModel

#: A face box in the frame: (x0, y0, x1, y1) pixels, x right, y down.
Box = tuple[float, float, float, float]
#: A face whose box width changed by more than this factor from one frame to the next is another
#: face, not the same one moved (a head moving 20 cm towards a camera at 70 cm grows by 1.4).
MAX_SIZE_CHANGE = 1.5

STATE_ACQUIRING = "acquiring"
STATE_TRACKED = "tracked"
STATE_PROVISIONAL = "provisional"
STATE_LOST = "lost"
STATE_NONE = "none"
STATE_STILL = "still"


class CabinSettings(StrictModel):
    """``drive_side``: the side of the car the driver sits on, ``left`` (left-hand drive: most of
    the world) or ``right`` (right-hand drive: UK, Japan, Australia, India...)."""

    drive_side: Literal["left", "right"] = "left"


class DriverSelectionSettings(StrictModel):
    """``window_s``: how long a face must be watched before it is chosen, seconds (1.5 s: long
    enough that a face detected on a few frames is not chosen, short next to the 3 s of Euro NCAP's
    long-distraction rule, the shortest alert the choice could delay); ``min_presence``: the share
    of that window's frames a face must be found on to count as staying (0.7: MediaPipe misses a
    turned or occluded face on some frames); ``lost_after_s``: a driver's face missing this long is
    given up and the driver acquired again (1 s: a glance over the shoulder or a hand in front of
    the face lasts less; the attention logic times the missing face meanwhile); ``max_jump``: the
    largest move of a face centre between two frames that is still the same face, in face widths
    (0.5: a head turns at up to ~0.5 m/s, 1.7 cm a frame at 30 fps and 10 cm at 5 fps, a third of a
    14-cm face width; neighbouring seats are several face widths apart)."""

    window_s: float = Field(1.5, gt=0, le=30)
    min_presence: float = Field(0.7, gt=0, le=1)
    lost_after_s: float = Field(1.0, gt=0, le=60)
    max_jump: float = Field(0.5, gt=0, le=5)


def driver_image_side(drive_side: str, mirrored: bool = False) -> Literal["left", "right"]:
    """The image side the driver appears on, for a camera facing the occupants.

    ``drive_side``: "left" (left-hand drive) or "right"; ``mirrored``: the camera's image is
    mirrored left-right. A camera facing the occupants sees the car's left on the image's right, so
    left-hand drive puts the driver on the image's right, unless the image is mirrored."""
    if drive_side not in ("left", "right"):
        raise ValueError(f"drive_side must be left or right, got {drive_side!r}")
    side = "right" if drive_side == "left" else "left"
    if mirrored:
        side = "left" if side == "right" else "right"
    return side


def face_box(points_px: np.ndarray) -> Box:
    """The box (x0, y0, x1, y1) px of a face's mesh points ``points_px`` (N, 2) (iris points may
    be included: they lie inside the mesh)."""
    lo = points_px.min(axis=0)
    hi = points_px.max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


@dataclass(frozen=True)
class DriverChoice:
    """One frame's choice. ``faces_in_view``: faces the face stage returned; ``index``: the chosen
    face's position in that list, ``track``: its track id, ``box_px``: its box (all None when no
    face is monitored); ``state``: acquiring | tracked | provisional | lost | none | still;
    ``reason``: one line saying why."""

    faces_in_view: int
    index: int | None
    track: int | None
    box_px: Box | None
    state: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"faces_in_view": self.faces_in_view, "chosen": self.track, "index": self.index,
                "box_px": None if self.box_px is None else [round(v, 1) for v in self.box_px],
                "state": self.state, "reason": self.reason}


@dataclass
class _Track:
    """A face followed from frame to frame: ``seen_s`` holds the timestamps it was found on within
    the presence window."""

    id: int
    box: Box
    first_seen_s: float
    last_seen_s: float
    seen_s: deque = field(default_factory=deque)
    passenger: bool = False  # seen beside the tracked driver: never chosen while this track lasts

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0

    @property
    def width(self) -> float:
        return max(self.box[2] - self.box[0], 1.0)


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


class DriverSelector:
    """Chooses the driver's face frame by frame (see the module docstring for the rules).

    ``settings``: :class:`DriverSelectionSettings`; ``drive_side``: "left" | "right";
    ``mirrored``: the camera image is mirrored. :meth:`update` takes one frame's face boxes (px) and
    returns a :class:`DriverChoice`; :meth:`pick_still` chooses in an unrelated still image.
    """

    def __init__(self, settings: DriverSelectionSettings | None = None, drive_side: str = "left",
                 mirrored: bool = False) -> None:
        self.settings = settings or DriverSelectionSettings()
        self.drive_side = drive_side
        self.image_side = driver_image_side(drive_side, mirrored)
        self._sign = 1.0 if self.image_side == "right" else -1.0
        self._other_side = "left" if self.image_side == "right" else "right"
        hand = f"{drive_side}-hand drive" + (", mirrored camera" if mirrored else "")
        self._where = f"{hand}: image {self.image_side}"
        self.reset()

    def reset(self) -> None:
        """Forget every face: the next frame starts a new acquisition."""
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._frames_s: deque = deque()
        self._driver: _Track | None = None
        self._firm = False
        self._chosen_at_s = 0.0
        self._why = ""
        self._acquire_from_s: float | None = None

    # -- geometry ----------------------------------------------------------------------------------
    def driver_sideness(self, box: Box, frame_width: int) -> float:
        """How far the box's centre lies towards the driver's image side, as a share of the frame
        width: > 0 on the driver's half, up to 0.5 at the edge."""
        return self._sign * (_centre(box)[0] / frame_width - 0.5)

    def _presence(self, track: _Track) -> float:
        return len(track.seen_s) / max(len(self._frames_s), 1)

    # -- per frame ---------------------------------------------------------------------------------
    def update(self, timestamp_s: float, boxes: Sequence[Box], frame_width: int) -> DriverChoice:
        """``timestamp_s``: the frame's time, s (increasing); ``boxes``: the faces found, (x0, y0,
        x1, y1) px each; ``frame_width``: px. Returns the frame's :class:`DriverChoice`."""
        s = self.settings
        t = float(timestamp_s)
        self._frames_s.append(t)
        while self._frames_s and self._frames_s[0] <= t - s.window_s:
            self._frames_s.popleft()
        matched = self._associate(t, boxes)
        for track in self._tracks:
            while track.seen_s and track.seen_s[0] <= t - s.window_s:
                track.seen_s.popleft()
        # Drop faces not found for lost_after_s; the driver's among them starts a new acquisition.
        kept = []
        for track in self._tracks:
            if t - track.last_seen_s > s.lost_after_s:
                if track is self._driver:
                    self._driver = None
                    self._acquire_from_s = t
            else:
                kept.append(track)
        self._tracks = kept
        if self._acquire_from_s is None:
            self._acquire_from_s = t
        visible = {id(track): i for i, track in matched.items()}  # track -> index in boxes

        def choice(track: _Track | None, state: str, reason: str) -> DriverChoice:
            if track is None:
                return DriverChoice(len(boxes), None, None, None, state, reason)
            index = visible[id(track)]
            return DriverChoice(len(boxes), index, track.id, tuple(boxes[index]), state, reason)

        shown = [track for track in self._tracks if id(track) in visible]
        if self._driver is not None:
            if not self._firm:
                self._take_over(t, shown, frame_width)
            if id(self._driver) in visible:
                if self._firm:
                    for track in shown:
                        if track is not self._driver:
                            track.passenger = True
                return choice(self._driver, STATE_TRACKED if self._firm else STATE_PROVISIONAL,
                              f"{self._why}; track {self._driver.id} chosen at {self._chosen_at_s:.1f} s")
            missing = t - self._driver.last_seen_s
            return choice(None, STATE_LOST,
                          f"driver's face (track {self._driver.id}) not found for {missing:.1f} s "
                          f"(given up after {s.lost_after_s:g} s); other faces are not monitored")
        if not boxes:
            return choice(None, STATE_NONE, "no face found")
        eligible = [track for track in shown if not track.passenger]
        if not eligible:
            return choice(None, STATE_NONE, "no driver: the faces in view were seen beside the driver (passengers); "
                                            "not monitored")
        staying = [track for track in eligible if self._presence(track) >= s.min_presence]
        elapsed = t - self._acquire_from_s
        if elapsed >= s.window_s and staying:
            self._choose(t, staying, frame_width)
            return choice(self._driver, STATE_TRACKED if self._firm else STATE_PROVISIONAL,
                          f"{self._why}; track {self._driver.id} chosen at {self._chosen_at_s:.1f} s")
        pool = staying or eligible
        best = max(pool, key=lambda track: self.driver_sideness(track.box, frame_width))
        return choice(best, STATE_ACQUIRING,
                      f"acquiring ({min(elapsed, s.window_s):.1f} of {s.window_s:g} s): the face furthest to the "
                      f"image {self.image_side} ({self._where})")

    def pick_still(self, boxes: Sequence[Box], frame_width: int) -> DriverChoice:
        """The choice in a still image unrelated to the frames before it (an image folder): no
        history to judge which face stays, so the face furthest towards the driver's side."""
        if not boxes:
            return DriverChoice(0, None, None, None, STATE_NONE, "no face found")
        index = max(range(len(boxes)), key=lambda i: self.driver_sideness(boxes[i], frame_width))
        return DriverChoice(len(boxes), index, None, tuple(boxes[index]), STATE_STILL,
                            f"still image: the face furthest to the image {self.image_side} ({self._where})")

    # -- internals ---------------------------------------------------------------------------------
    def _associate(self, t: float, boxes: Sequence[Box]) -> dict[int, _Track]:
        """Matches this frame's boxes to the tracks (nearest centres first, within ``max_jump`` face
        widths and :data:`MAX_SIZE_CHANGE`); unmatched boxes start tracks. -> box index -> track."""
        pairs = []
        for ti, track in enumerate(self._tracks):
            cx, cy = track.centre
            for bi, box in enumerate(boxes):
                bx, by = _centre(box)
                distance = float(np.hypot(bx - cx, by - cy)) / track.width
                ratio = max(box[2] - box[0], 1.0) / track.width
                if distance <= self.settings.max_jump and 1.0 / MAX_SIZE_CHANGE <= ratio <= MAX_SIZE_CHANGE:
                    pairs.append((distance, ti, bi))
        matched: dict[int, _Track] = {}
        used_tracks: set[int] = set()
        for _, ti, bi in sorted(pairs):
            if ti in used_tracks or bi in matched:
                continue
            used_tracks.add(ti)
            matched[bi] = self._tracks[ti]
        for bi, box in enumerate(boxes):
            if bi in matched:
                track = matched[bi]
                track.box = tuple(float(v) for v in box)
            else:
                track = _Track(self._next_id, tuple(float(v) for v in box), t, t)
                self._next_id += 1
                self._tracks.append(track)
                matched[bi] = track
            track.last_seen_s = t
            track.seen_s.append(t)
        return matched

    def _choose(self, t: float, staying: list[_Track], frame_width: int) -> None:
        """Chooses the driver among the faces that stayed through the window."""
        best = max(staying, key=lambda track: self.driver_sideness(track.box, frame_width))
        on_driver_half = self.driver_sideness(best.box, frame_width) > 0
        self._driver, self._chosen_at_s = best, t
        # A face alone on the passenger's half is kept only until a face stays on its driver side.
        self._firm = len(staying) > 1 or on_driver_half
        if len(staying) > 1:
            self._why = (f"driver side ({self._where}): furthest to the image {self.image_side} of the "
                         f"{len(staying)} faces that stayed")
        elif on_driver_half:
            self._why = f"driver side ({self._where}): the only face that stayed"
        else:
            self._why = (f"the only face that stayed, on the passenger's half (image {self._other_side}); "
                         f"kept until a face stays on its image-{self.image_side} side ({self._where})")

    def _take_over(self, t: float, shown: list[_Track], frame_width: int) -> None:
        """A provisional driver (alone on the passenger's half) gives way to a face that stays on its
        driver side."""
        mine = self.driver_sideness(self._driver.box, frame_width)
        rivals = [track for track in shown if track is not self._driver and not track.passenger
                  and self._presence(track) >= self.settings.min_presence
                  and self.driver_sideness(track.box, frame_width) > mine]
        if rivals:
            previous = self._driver
            self._choose(t, [previous, *rivals], frame_width)
            if self._driver is not previous:
                previous.passenger = self._firm
