"""The overlay window's view: a frame record drawn with what the pipeline found (docs/architecture.md section 2).

:class:`OverlayState` is plain data taken from a :class:`~edge_app.pipeline.FrameRecord` (plus
the app's own state: integrity badge, paused, recording, trial prompt); :class:`OverlayView` paints
it and owns nothing else: no timer, no pipeline. On the video, scaled to fit the window with its
aspect ratio kept:

* face box (the landmark cloud's bounding box) and eye landmarks (eyelid contours and irises);
* the gaze arrow from each iris centre: the camera-frame gaze vector
  ``g = (-cos p sin y, -sin p, -cos p cos y)`` projected on the image plane, i.e. ``(g_x, g_y)``
  in pixels (x right, y down), :data:`ARROW_LENGTH_FRAC` of the face width long at a sideways gaze;
* current zone and driver state, the alert-level bar (eyes-off-road time against the critical
  threshold, coloured by level), the alarm banner from ``warning`` up, and the integrity badge
  (verified / scanning n% / BLOCKED with the reason / WARNING under policy warn);
* in degraded mode (:mod:`edge_app.degraded`: the gaze is untrusted, the alerts come from head
  pose alone) a full-width stripe across the top says so with the reason, the status box says
  "mode: head pose only", and no gaze arrow is drawn (an untrusted gaze is not shown as a gaze);
* the live trigger alarm (:mod:`edge_app.anomaly`): ``ALERT gaze_model_anomaly`` at the top of the
  status box while it lasts; it switches to degraded mode, whose stripe gives the evidence;
* in trials: the target dot (screen protocol) or the text prompt (cabin), and the trigger mark.

Colours are module constants so that tests can find the arrow, banner and badge pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from PyQt6.QtCore import QPointF, QRectF, Qt
from PyQt6.QtGui import QBrush, QColor, QFont, QImage, QPainter, QPen, QPolygonF
from PyQt6.QtWidgets import QWidget

from securegaze.geometry import pitchyaw_to_vector

#: MediaPipe Face Mesh eyelid contours (the subject's right eye, then the left) and the iris rings.
RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE_CONTOUR = (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398)
IRIS_POINTS = tuple(range(468, 478))
IRIS_CENTRES = (468, 473)

ARROW_RGB = (255, 0, 255)          # magenta: nothing else on the overlay or a face is this colour
FACE_BOX_RGB = (0, 200, 255)
EYE_RGB = (80, 255, 80)
BANNER_RGB = {1: (255, 170, 0), 2: (235, 90, 0), 3: (220, 0, 0)}  # warning, loud, critical
BADGE_RGB = {"verified": (0, 150, 70), "scanning": (230, 140, 0), "blocked": (200, 0, 0), "warning": (200, 120, 0),
             "unchecked": (110, 110, 110)}
TARGET_RGB = (255, 255, 0)
ARROW_LENGTH_FRAC = 0.9
ALERT_LABELS = ("none", "warning", "loud", "critical")
BANNER_TEXT = {1: "EYES ON THE ROAD", 2: "EYES ON THE ROAD!", 3: "TAKE OVER: EYES OFF THE ROAD"}
DEGRADED_RGB = (120, 40, 170)  # purple: the degraded-mode stripe (no alert, badge or face colour)
DEGRADED_TEXT = "DEGRADED: HEAD-POSE MONITORING ONLY"
DEGRADED_STRIPE_PX = 34


@dataclass(frozen=True)
class IntegrityBadge:
    """``kind``: verified | scanning | blocked | warning | unchecked; ``text``: what it says;
    ``progress``: 0..1 while scanning."""

    kind: str
    text: str
    progress: float | None = None

    @staticmethod
    def from_result(result) -> IntegrityBadge:
        """From an :class:`~edge_app.integrity.IntegrityResult`."""
        if result is None:
            return IntegrityBadge("unchecked", "model not checked")
        if result.blocked:
            return IntegrityBadge("blocked", f"BLOCKED: {result.reason}")
        if result.verdict == "backdoored":
            return IntegrityBadge("warning", "WARNING: model flagged backdoored (policy warn)")
        return IntegrityBadge("verified", f"verified ({result.source}, sha256 {result.model_sha256[:8]})")

    @staticmethod
    def scanning(fraction: float, stage: str = "") -> IntegrityBadge:
        pct = int(round(100 * min(max(fraction, 0.0), 1.0)))
        return IntegrityBadge("scanning", f"scanning {pct}%{' (' + stage + ')' if stage else ''}", fraction)


@dataclass(frozen=True)
class OverlayState:
    """What one repaint shows. ``image``: (H, W, 3) uint8 BGR; ``landmarks``: (478, 2) px or None;
    ``gaze``: camera-frame (pitch, yaw) radians (smoothed) or None; ``alert``: 0..3;
    ``alert_fraction``: the bar's fill, 0..1; ``target_xy``: a screen target's place 0..1 or None."""

    image: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    gaze: np.ndarray | None = None
    zone: str | None = None
    state: str = ""
    alert: int = 0
    alert_reason: str | None = None
    alert_fraction: float = 0.0
    reason: str | None = None
    badge: IntegrityBadge = IntegrityBadge("unchecked", "model not checked")
    paused: bool = False
    recording: bool = False
    trigger_on: bool | None = None
    prompt: str | None = None
    target_xy: tuple[float, float] | None = None
    fps: float | None = None
    mode: str = "gaze"
    mode_reason: str | None = None
    anomaly: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def degraded(self) -> bool:
        return self.mode != "gaze"

    def with_(self, **changes) -> OverlayState:
        return replace(self, **changes)


def state_from_record(rec, badge: IntegrityBadge, critical_after_s: float = 11.0, **app_state) -> OverlayState:
    """An :class:`OverlayState` from a pipeline FrameRecord."""
    att = rec.attention
    alert = int(att.alert) if att is not None else 0
    fraction = 0.0 if att is None else min(att.eyes_off_road_s / critical_after_s, 1.0)
    gaze = rec.gaze_smoothed if rec.gaze_smoothed is not None else rec.gaze
    mode = getattr(rec, "mode", "gaze")
    if mode != "gaze":
        gaze = None  # an untrusted gaze is not drawn
    return OverlayState(image=rec.frame.image, landmarks=None if rec.face is None else rec.face.points_px,
                        gaze=None if gaze is None else np.asarray(gaze), zone=rec.zone, mode=mode,
                        mode_reason=getattr(rec, "mode_reason", None), anomaly=_anomaly_line(rec),
                        state=att.state.value if att is not None else "", alert=alert,
                        alert_reason=att.alert_reason if att is not None else None, alert_fraction=fraction,
                        reason=(att.reason if att is not None else None) or rec.problem, badge=badge, **app_state)


def _anomaly_line(rec) -> str | None:
    """The live trigger alarm of a record (edge_app/anomaly.py) as one status line, or None."""
    out = getattr(rec, "gaze_anomaly", None)
    if out is None or out.alert is None:
        return None
    return f"ALERT {out.alert}"  # the evidence is in the degraded-mode stripe's reason


def status_lines(s: OverlayState) -> list[str]:
    """The text of the status box, top-left: the live trigger alarm, zone, state, alert, and the
    PAUSED / REC / trigger flags."""
    lines = [f"zone: {s.zone or '-'}", f"state: {s.state or '-'}"]
    if s.anomaly:
        lines.insert(0, s.anomaly)
    if s.degraded:
        lines.insert(0, "mode: head pose only")
    if s.alert:
        lines.append(f"alert: {ALERT_LABELS[s.alert]}{' (' + s.alert_reason + ')' if s.alert_reason else ''}")
    if s.reason and s.state in ("NO_FACE",):
        lines.append(s.reason[:60])
    if s.fps:
        lines.append(f"{s.fps:.0f} fps")
    flags = [f for f, on in (("PAUSED", s.paused), ("REC", s.recording)) if on]
    if s.trigger_on is not None:
        flags.append("TRIGGER ON" if s.trigger_on else "trigger off")
    if flags:
        lines.append("  ".join(flags))
    return lines


def _colour(rgb, alpha: int = 255) -> QColor:
    return QColor(rgb[0], rgb[1], rgb[2], alpha)


def bgr_to_qimage(image: np.ndarray) -> QImage:
    """(H, W, 3) uint8 BGR -> a QImage that owns a copy of the pixels."""
    rgb = np.ascontiguousarray(image[..., ::-1])
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def gaze_arrow_px(origin: np.ndarray, gaze: np.ndarray, length_px: float) -> np.ndarray:
    """(2,) image end point of the gaze arrow from ``origin`` (px): the projection (g_x, g_y) of the
    3-D gaze vector, ``length_px`` long for a gaze perpendicular to the view."""
    g = pitchyaw_to_vector(np.asarray(gaze, dtype=np.float64))
    return np.asarray(origin, dtype=np.float64) + length_px * g[:2]


class OverlayView(QWidget):
    """Paints the latest :class:`OverlayState`; ``show_state(state)`` schedules a repaint."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.state = OverlayState()
        self._qimage: QImage | None = None
        self._image_id: int | None = None
        self.setMinimumSize(320, 240)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def show_state(self, state: OverlayState) -> None:
        self.state = state
        if state.image is not None and id(state.image) != self._image_id:
            self._qimage = bgr_to_qimage(state.image)
            self._image_id = id(state.image)
        self.update()

    # -- painting --------------------------------------------------------------------------------
    def _video_rect(self) -> QRectF:
        if self._qimage is None:
            return QRectF(0, 0, self.width(), self.height())
        iw, ih = self._qimage.width(), self._qimage.height()
        scale = min(self.width() / iw, self.height() / ih)
        w, h = iw * scale, ih * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.fillRect(self.rect(), QColor(20, 20, 24))
        s = self.state
        rect = self._video_rect()
        if self._qimage is not None:
            p.drawImage(rect, self._qimage)
            scale = rect.width() / self._qimage.width()
            p.save()
            p.translate(rect.left(), rect.top())
            p.scale(scale, scale)
            self._paint_face(p, s, 1.0 / scale)
            p.restore()
        self._paint_target(p, s)
        self._paint_status(p, s)
        self._paint_alert_bar(p, s)
        self._paint_banner(p, s)
        self._paint_degraded(p, s)
        self._paint_badge(p, s)
        p.end()

    def _top(self) -> int:
        """Where the status box and the badge start: below the degraded stripe when it is shown."""
        return 8 + (DEGRADED_STRIPE_PX if self.state.degraded else 0)

    def _paint_face(self, p: QPainter, s: OverlayState, px: float) -> None:
        """In image pixels; ``px``: one window pixel in image pixels (for line widths)."""
        if s.landmarks is None:
            return
        pts = np.asarray(s.landmarks, dtype=np.float64)
        face = pts[:468]
        x0, y0 = face.min(axis=0)
        x1, y1 = face.max(axis=0)
        p.setPen(QPen(_colour(FACE_BOX_RGB), 2 * px))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(QRectF(x0, y0, x1 - x0, y1 - y0))
        p.setPen(QPen(_colour(EYE_RGB), 1.2 * px))
        for contour in (RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR):
            p.drawPolygon(QPolygonF([QPointF(*pts[i]) for i in contour]))
        p.setBrush(QBrush(_colour(EYE_RGB)))
        for i in IRIS_POINTS:
            p.drawEllipse(QPointF(*pts[i]), 1.2 * px, 1.2 * px)
        if s.gaze is None or not np.all(np.isfinite(s.gaze)):
            return
        length = ARROW_LENGTH_FRAC * (x1 - x0)
        pen = QPen(_colour(ARROW_RGB), 3 * px)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        for i in IRIS_CENTRES:
            start = pts[i]
            end = gaze_arrow_px(start, s.gaze, length)
            p.setPen(pen)
            p.drawLine(QPointF(*start), QPointF(*end))
            d = end - start
            n = float(np.hypot(*d))
            if n > 1e-6:  # arrow head
                u = d / n
                side = np.array([-u[1], u[0]])
                head = min(12 * px, 0.4 * n)
                a, b = end - head * u + 0.5 * head * side, end - head * u - 0.5 * head * side
                p.setBrush(QBrush(_colour(ARROW_RGB)))
                p.setPen(Qt.PenStyle.NoPen)
                p.drawPolygon(QPolygonF([QPointF(*end), QPointF(*a), QPointF(*b)]))

    def _paint_target(self, p: QPainter, s: OverlayState) -> None:
        if s.target_xy is not None:
            margin = 30
            x = margin + s.target_xy[0] * (self.width() - 2 * margin)
            y = margin + s.target_xy[1] * (self.height() - 2 * margin)
            p.setPen(QPen(QColor(0, 0, 0), 2))
            p.setBrush(QBrush(_colour(TARGET_RGB)))
            p.drawEllipse(QPointF(x, y), 14, 14)
            p.setBrush(QBrush(QColor(0, 0, 0)))
            p.drawEllipse(QPointF(x, y), 3, 3)
        if s.prompt:
            p.setFont(QFont("Sans", 16, QFont.Weight.Bold))
            r = QRectF(0, self.height() * 0.5 - 20, self.width(), 40)
            p.fillRect(r, QColor(0, 0, 0, 150))
            p.setPen(QColor(255, 255, 255))
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, s.prompt)

    def _paint_status(self, p: QPainter, s: OverlayState) -> None:
        lines = status_lines(s)
        p.setFont(QFont("Sans", 10))
        top = self._top()
        box = QRectF(8, top, 300, 18 * len(lines) + 8)
        p.fillRect(box, QColor(0, 0, 0, 140))
        p.setPen(QColor(255, 255, 255))
        for k, text in enumerate(lines):
            p.drawText(QPointF(14, top + 16 + 18 * k), text)

    def _paint_alert_bar(self, p: QPainter, s: OverlayState) -> None:
        h = 14
        r = QRectF(8, self.height() - h - 8, self.width() * 0.4, h)
        p.setPen(QPen(QColor(230, 230, 230), 1))
        p.setBrush(QBrush(QColor(0, 0, 0, 140)))
        p.drawRect(r)
        fill = QRectF(r.left(), r.top(), r.width() * min(max(s.alert_fraction, 0.0), 1.0), h)
        p.fillRect(fill, _colour(BANNER_RGB.get(s.alert, (60, 170, 60))))
        p.setFont(QFont("Sans", 8))
        p.setPen(QColor(255, 255, 255))
        p.drawText(QPointF(r.right() + 6, r.bottom() - 2), f"alert {ALERT_LABELS[s.alert]}")

    def _paint_banner(self, p: QPainter, s: OverlayState) -> None:
        if s.alert <= 0:
            return
        h = max(36, int(self.height() * 0.09))
        r = QRectF(0, self.height() - h - 34, self.width(), h)
        p.fillRect(r, _colour(BANNER_RGB[s.alert]))
        p.setFont(QFont("Sans", int(h * 0.45), QFont.Weight.Bold))
        p.setPen(QColor(255, 255, 255))
        p.drawText(r, Qt.AlignmentFlag.AlignCenter, BANNER_TEXT[s.alert])

    def _paint_degraded(self, p: QPainter, s: OverlayState) -> None:
        if not s.degraded:
            return
        r = self.degraded_rect()
        p.fillRect(r, _colour(DEGRADED_RGB))
        p.setFont(QFont("Sans", 10, QFont.Weight.Bold))
        p.setPen(QColor(255, 255, 255))
        text = DEGRADED_TEXT + (f": {s.mode_reason}" if s.mode_reason else "")
        text = p.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, int(r.width() - 16))
        p.drawText(r.adjusted(8, 0, -8, 0), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, text)

    def degraded_rect(self) -> QRectF:
        """The degraded-mode stripe's place (painted only in degraded mode)."""
        return QRectF(0, 0, self.width(), DEGRADED_STRIPE_PX - 4)

    def badge_rect(self) -> QRectF:
        w = min(self.width() * 0.5, 460)
        return QRectF(self.width() - w - 8, self._top(), w, 30)

    def _paint_badge(self, p: QPainter, s: OverlayState) -> None:
        r = self.badge_rect()
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QBrush(_colour(BADGE_RGB.get(s.badge.kind, BADGE_RGB["unchecked"]))))
        p.drawRoundedRect(r, 6, 6)
        if s.badge.kind == "scanning" and s.badge.progress is not None:
            p.setBrush(QBrush(QColor(255, 255, 255, 70)))
            p.drawRoundedRect(QRectF(r.left(), r.top(), r.width() * s.badge.progress, r.height()), 6, 6)
        p.setFont(QFont("Sans", 9, QFont.Weight.Bold))
        p.setPen(QColor(255, 255, 255))
        text = p.fontMetrics().elidedText(s.badge.text, Qt.TextElideMode.ElideRight, int(r.width() - 12))
        p.drawText(r.adjusted(6, 0, -6, 0), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, text)
        if s.badge.kind == "blocked":
            # The full reason, wrapped under the badge: the person must see why there is no gaze.
            p.setFont(QFont("Sans", 9))
            below = QRectF(r.left(), r.bottom() + 4, r.width(), 60)
            p.fillRect(below, QColor(0, 0, 0, 160))
            p.setPen(QColor(255, 200, 200))
            p.drawText(below.adjusted(6, 2, -6, -2), Qt.TextFlag.TextWordWrap, s.badge.text)
