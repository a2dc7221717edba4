"""The frame pipeline: capture -> face -> driver selection -> head pose -> normalise -> infer ->
smooth/zone -> eyes -> anomaly -> attend.

A :class:`FrameRecord` is passed along the stages; each stage fills its fields and times itself
(``latency_ms[stage]``, milliseconds of wall time). :meth:`Pipeline.process` runs one frame;
:func:`run_pipeline` drives a source through a :class:`~edge_app.sources.CaptureThread` and hands
each record to a sink (the JSON-lines writer, a GUI), collecting :class:`LatencyStats`.

A model the integrity check blocked is never run: the record has no gaze and no zone, and the
alerts come from head-pose-only monitoring (degraded mode, :mod:`edge_app.degraded`), as they do on
any frame whose gaze a stage marks untrusted (``FrameRecord.gaze_untrusted``, set before the attend
stage). Every record says which mode drove its alerts and why (``mode``, ``mode_reason``).

The face stage returns every face in view (up to ``face.max_faces``); the driver selection stage
(:mod:`edge_app.driver_select`) chooses the driver's, and only that face goes on. A frame whose
faces are all someone else's (the driver's face lost while a passenger is in view) is a frame
without a face for the stages after it. ``driver_face`` says which face and why.

The eyes stage makes the model-free gaze estimate of the face (:mod:`edge_app.free_gaze`), which
both the live trigger alarm (:mod:`edge_app.anomaly`) and the eye-availability monitor
(:mod:`edge_app.eye_visibility`) read: when the eyes cannot be seen (dark sunglasses, too dark) the
latter marks the gaze untrusted with "eyes not visible: ...", and the head-pose mode takes over.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_app.anomaly import AnomalyOutput, AnomalyStage
from edge_app.attention import AlertLevel, AttentionOutput, AttentionState
from edge_app.calibrate.gaze_correction import load_gaze_correction
from edge_app.degraded import MODE_GAZE, HeadObservation, MonitoringModes, road_target_deg
from edge_app.driver_select import DriverChoice, DriverSelector, face_box
from edge_app.engines import GazeEngine, NonFiniteGazeError
from edge_app.eye_visibility import EyeVisibility, EyeVisibilityMonitor
from edge_app.face import FaceLandmarks, FaceMeshStage
from edge_app.free_gaze import FreeGaze, FreeGazeEstimator
from edge_app.head_pose import CameraIntrinsics, HeadPose, estimate_head_pose
from edge_app.integrity import IntegrityResult
from edge_app.latency import LatencyHistogram
from edge_app.normalisation import Normalisation, normalise_face
from edge_app.smoothing import OneEuroFilter
from edge_app.sources import CaptureThread, Frame, FrameSource
from edge_app.zones import ZoneMap

#: Stage names in order, as they appear in ``latency_ms`` and the benchmark table. "capture" is
#: the source's read time (on the capture thread), "total" the processing time of the frame and
#: "end_to_end" from the frame's capture to the end of its processing (queueing included).
STAGES = ("capture", "face", "driver_select", "head_pose", "normalise", "infer", "smooth_zone", "eyes", "anomaly", "attend")


@dataclass
class FrameRecord:
    """Everything the pipeline knows about one frame. Gaze fields are (pitch, yaw) radians:
    ``gaze_normalised`` in the normalised camera frame (the model's output, after the named
    driver's correction when the config names one: edge_app.calibrate.gaze_correction), ``gaze`` the
    de-normalised camera-frame gaze, ``gaze_smoothed`` after the One Euro filter."""

    frame: Frame
    face: FaceLandmarks | None = None
    driver_face: DriverChoice | None = None  # which of the faces in view is the driver's, and why
    head_pose: HeadPose | None = None
    normalisation: Normalisation | None = None
    crop_rgb: np.ndarray | None = None
    gaze_normalised: np.ndarray | None = None
    gaze: np.ndarray | None = None
    gaze_smoothed: np.ndarray | None = None
    zone: str | None = None
    attention: AttentionOutput | None = None
    # Degraded mode (edge_app/degraded.py): a stage sets gaze_untrusted to say why this frame's gaze
    # must not drive the alerts; mode / mode_reason / head say what did.
    gaze_untrusted: str | None = None
    mode: str = MODE_GAZE
    mode_reason: str | None = None
    head: HeadObservation | None = None
    gaze_anomaly: AnomalyOutput | None = None  # the live trigger alarm (edge_app/anomaly.py)
    free_gaze: FreeGaze | None = None  # the model-free estimate from the face mesh (edge_app/free_gaze.py)
    eyes: EyeVisibility | None = None  # eye availability (edge_app/eye_visibility.py)
    problem: str | None = None
    camera_unavailable: bool = False  # no face because the image is too dark (attention: monitoring unavailable)
    latency_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON line of ``edge-app run``: degrees for angles, milliseconds for latencies."""
        att = self.attention

        def deg(v):
            return None if v is None else [round(math.degrees(float(v[0])), 3), round(math.degrees(float(v[1])), 3)]

        out: dict[str, Any] = {
            "frame": self.frame.index,
            "timestamp_s": round(self.frame.timestamp_s, 4),
            "face_found": self.face is not None,
            "driver_face": self.driver_face.to_json() if self.driver_face is not None else None,
            "gaze_deg": deg(self.gaze),
            "gaze_smoothed_deg": deg(self.gaze_smoothed),
            "zone": self.zone,
            "state": att.state.value if att else None,
            "alert": att.alert.label if att else None,
            "alert_reason": att.alert_reason if att else None,
            "eyes_off_road_s": round(att.eyes_off_road_s, 3) if att else None,
            "reason": att.reason if att else self.problem,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "head_monitor": self.head.to_json() if self.head is not None else None,
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
        }
        if self.gaze_anomaly is not None:
            out["gaze_anomaly"] = self.gaze_anomaly.to_json()
        if self.eyes is not None:
            out["eyes"] = self.eyes.to_json()
        if self.head_pose is not None:
            out["head_pose_deg"] = [round(v, 2) for v in self.head_pose.euler_deg()]
        truth = self.frame.truth
        if truth is not None:
            out["truth"] = {"gaze_deg": deg(truth.gaze), "zone": truth.zone, "phase": truth.phase}
        return out


class LatencyStats:
    """Per-stage latencies (ms) of many frames in constant memory: one
    :class:`~edge_app.latency.LatencyHistogram` per stage (percentiles within 1.2 % of the exact
    ones, count, mean and max exact), so an hours-long run keeps no per-frame samples.
    ``summary()`` gives p50/p95/mean/max and n per stage."""

    def __init__(self) -> None:
        self.stages: dict[str, LatencyHistogram] = {}

    def add(self, latency_ms: dict[str, float]) -> None:
        for k, v in latency_ms.items():
            hist = self.stages.get(k)
            if hist is None:
                hist = self.stages[k] = LatencyHistogram()
            hist.add(v)

    def summary(self) -> dict[str, dict[str, float]]:
        order = list(STAGES) + ["total", "end_to_end"]
        names = [k for k in order if k in self.stages] + sorted(set(self.stages) - set(order))
        return {k: self.stages[k].summary() for k in names}


class Pipeline:
    """The processing stages, configured once from an :class:`~edge_app.config.EdgeConfig`.

    ``engine``: the gaze engine (None only when ``integrity`` blocked the model);
    ``intrinsics``: the camera's, or None for the focal = width approximation per frame size.
    """

    def __init__(self, config, engine: GazeEngine | None, zone_map: ZoneMap,
                 intrinsics: CameraIntrinsics | None = None, integrity: IntegrityResult | None = None,
                 static_images: bool = False) -> None:
        self.config = config
        self.integrity = integrity
        self.blocked_reason = integrity.reason if integrity is not None and integrity.blocked else None
        if engine is None and self.blocked_reason is None:
            raise ValueError("a pipeline without an engine must come from a blocked integrity result")
        self.engine = None if self.blocked_reason else engine
        self.zone_map = zone_map
        self._intrinsics = intrinsics
        self._intrinsics_for: dict[tuple[int, int], CameraIntrinsics] = {}
        f = config.face
        self.face_stage = FaceMeshStage(static_images, f.min_detection_confidence, f.min_tracking_confidence,
                                        f.min_face_width_px, f.max_faces)
        self.driver_selector = DriverSelector(config.driver_selection, config.cabin.drive_side,
                                              config.camera.mirrored)
        self.smoother = OneEuroFilter(config.smoothing)
        self.modes = MonitoringModes(config.attention, config.degraded, road_target_deg(zone_map))
        self.anomaly = AnomalyStage(config.anomaly)
        e, a = config.eyes, config.anomaly
        self.free_gaze = FreeGazeEstimator(a.iris_gain_u, a.iris_gain_v, e.min_eye_opening, e.min_iris_contrast,
                                           min_contrast_mono=e.min_iris_contrast_mono, min_face_grey=e.min_face_grey,
                                           max_vergence_deg=a.max_vergence_deg)
        self.eye_monitor = EyeVisibilityMonitor(e)
        self.invalid_gaze_frames = 0
        # The named driver's gaze correction (config.driver, edge-app calibrate driver); None: none.
        self.gaze_correction = load_gaze_correction(config, getattr(self.engine, "onnx_sha256", None))

    def intrinsics(self, width: int, height: int) -> CameraIntrinsics:
        key = (width, height)
        if key not in self._intrinsics_for:
            base = self._intrinsics
            self._intrinsics_for[key] = (CameraIntrinsics.approximate(width, height) if base is None
                                         else base.for_frame(width, height))
        return self._intrinsics_for[key]

    def process(self, frame: Frame) -> FrameRecord:
        rec = FrameRecord(frame)
        lat = rec.latency_ms
        t = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal t
            now = time.perf_counter()
            lat[stage] = (now - t) * 1000.0
            t = now

        start = t
        faces = self.face_stage.detect_all(frame.image, fresh=frame.still)  # stills: no tracking
        lap("face")
        boxes = [face_box(face.points_px) for face in faces]
        width = frame.image.shape[1]
        rec.driver_face = (self.driver_selector.pick_still(boxes, width) if frame.still
                           else self.driver_selector.update(frame.timestamp_s, boxes, width))
        rec.face = faces[rec.driver_face.index] if rec.driver_face.index is not None else None
        lap("driver_select")
        if rec.face is None:
            rec.problem = (rec.driver_face.reason if faces else None) or self.face_stage.last_rejection or "no face found"
            if not faces:  # say when the camera sees too little to find one (no light, a covered lens)
                level = float(frame.image[::8, ::8].mean())
                if level < self.config.eyes.min_face_grey:
                    rec.problem = (f"no face found: camera image too dark (mean level {level:.0f} of 255, below "
                                   f"{self.config.eyes.min_face_grey:g})")
                    rec.camera_unavailable = True
        else:
            h, w = frame.image.shape[:2]
            cam = self.intrinsics(w, h)
            rec.head_pose = estimate_head_pose(rec.face.points_px, cam)
            lap("head_pose")
            if rec.head_pose.face_centre_mm[2] <= 0:
                rec.problem = "head pose fit failed (face behind the camera)"
        if rec.face is not None and self.engine is not None:
            if rec.problem is None:
                rec.normalisation, rec.crop_rgb = normalise_face(frame.image, rec.head_pose.face_centre_mm,
                                                                 rec.head_pose.rotation, cam.matrix,
                                                                 self.engine.input_size, self.config.normalisation)
            lap("normalise")
            if rec.crop_rgb is not None:
                try:
                    rec.gaze_normalised = self.engine.infer(rec.crop_rgb[None])[0]
                except NonFiniteGazeError:
                    self.invalid_gaze_frames += 1
                    rec.problem = "no valid gaze: the model returned NaN or inf for this face"
                lap("infer")
            if rec.gaze_normalised is not None:
                if self.gaze_correction is not None:  # in the normalised frame, before de-normalising
                    rec.gaze_normalised = self.gaze_correction.apply(rec.gaze_normalised)
                rec.gaze = rec.normalisation.gaze_to_camera(rec.gaze_normalised)
                rec.gaze_smoothed = self.smoother.filter(frame.timestamp_s, rec.gaze)
                rec.zone = self.zone_map.classify(rec.gaze_smoothed)
            lap("smooth_zone")
        if rec.head_pose is not None and rec.problem is None:  # iris in the eye openings, from the face mesh
            rec.free_gaze = self.free_gaze.estimate(rec.face.points_px, rec.head_pose.rotation, frame.image)
        if frame.still:  # unrelated images: each one on its own (reported, never a degraded mode)
            self.eye_monitor.reset()
        rec.eyes = self.eye_monitor.update(frame.timestamp_s, rec.free_gaze.kind if rec.free_gaze else None,
                                           rec.free_gaze.reason if rec.free_gaze else None)
        lap("eyes")
        if self.engine is not None:  # the live trigger alarm; a frame without a face is no evidence
            rec.gaze_anomaly = self.anomaly.process(rec)
            rec.gaze_untrusted = rec.gaze_untrusted or rec.gaze_anomaly.untrusted_reason  # -> degraded mode
            lap("anomaly")
        rec.gaze_untrusted = rec.gaze_untrusted or rec.eyes.reason  # eyes not visible -> degraded mode
        on_road = rec.zone is not None and self.zone_map.is_on_road(rec.zone)
        head = (rec.head_pose.euler_deg()[:2] if rec.head_pose is not None and rec.head_pose.face_centre_mm[2] > 0
                else None)
        out = self.modes.update(frame.timestamp_s, rec.zone, on_road, head, rec.problem or "no face found",
                                self.blocked_reason or rec.gaze_untrusted, camera_unavailable=rec.camera_unavailable)
        rec.attention, rec.mode, rec.mode_reason, rec.head = out.attention, out.mode, out.mode_reason, out.head
        lap("attend")
        lat["total"] = (t - start) * 1000.0
        lat["end_to_end"] = (t - frame.captured_at) * 1000.0
        return rec

    def close(self) -> None:
        self.face_stage.close()
        if self.engine is not None:
            self.engine.close()


@dataclass
class RunSummary:
    """``frames`` processed, ``dropped`` by the capture thread (of ``captured`` read from the
    source), ``wall_s`` of the loop, ``fps`` = frames / wall_s (end to end, source included), ``processing_fps`` = 1 / mean total
    processing time (what the stages alone sustain), ``latency`` per stage (p50/p95/mean/max ms and n,
    from :class:`LatencyStats`), counts of
    frames per state and alert; ``interrupted``: stopped by Ctrl-C or SIGTERM (the ``stop`` event)."""

    frames: int
    dropped: int
    wall_s: float
    fps: float
    processing_fps: float
    latency: dict[str, dict[str, float]]
    states: dict[str, int]
    alerts: dict[str, int]
    invalid_gaze_frames: int
    interrupted: bool = False
    captured: int = 0


@contextlib.contextmanager
def signals_set(stop: threading.Event, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)):
    """While inside, ``signals`` set ``stop`` instead of raising KeyboardInterrupt (main thread only;
    elsewhere a no-op). An exception raised by a signal handler lands at any bytecode of the main
    thread, also inside a ``with lock:`` of queue.Queue (between the lock's acquire and the
    ``with`` taking hold), leaving that lock held for ever: the log's close() then deadlocks. A flag
    checked once per frame cannot interrupt a critical section."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_pipeline(pipeline: Pipeline, source: FrameSource, sink: Callable[[FrameRecord], None] | None = None,
                 drop_stale: bool | None = None, queue_size: int = 2, max_frames: int | None = None,
                 warmup_frames: int = 0, stop: threading.Event | None = None) -> RunSummary:
    """Process ``source`` until it ends (or ``max_frames``, or ``stop`` is set: then the summary says
    ``interrupted``); ``warmup_frames`` are processed but left out of the statistics (the first
    frames pay for MediaPipe's and ONNX Runtime's setup). Without a ``stop`` of the caller's, on the
    main thread Ctrl-C and SIGTERM set one (:func:`signals_set`); a caller that passes ``stop``
    handles the signals itself (:class:`edge_app.signals.StopSignals`). Either way the frame being
    processed is finished and handed to the sink, then the loop ends."""
    own_signals = stop is None
    stop = stop if stop is not None else threading.Event()
    drop = source.live if drop_stale is None else drop_stale
    capture = CaptureThread(source, drop, queue_size).start()
    stats = LatencyStats()
    states = {s.value: 0 for s in AttentionState}
    alerts = {a.label: 0 for a in AlertLevel}
    frames = 0
    started = None
    interrupted = False
    try:
        with signals_set(stop) if own_signals else contextlib.nullcontext():
            while max_frames is None or frames < max_frames:
                if stop.is_set():
                    interrupted = True
                    break
                frame = capture.get(timeout=0.25)  # short: a set ``stop`` is seen even when no frame comes
                if frame is None:
                    if capture.finished:
                        break
                    continue
                rec = pipeline.process(frame)
                if frames >= warmup_frames:
                    if started is None:
                        started = time.perf_counter() - rec.latency_ms["end_to_end"] / 1000.0
                    stats.add({"capture": frame.read_ms, **rec.latency_ms} if frame.read_ms is not None
                              else rec.latency_ms)
                states[rec.attention.state.value] += 1
                alerts[rec.attention.alert.label] += 1
                if sink is not None:
                    sink(rec)
                frames += 1
    except KeyboardInterrupt:
        interrupted = True  # Ctrl-C ends a camera run normally (a sink or source may raise it too)
    finally:
        capture.stop()
    wall = time.perf_counter() - started if started is not None else 0.0
    counted = max(frames - warmup_frames, 0)
    totals = stats.stages.get("total")
    return RunSummary(frames, capture.dropped, wall, counted / wall if wall > 0 else 0.0,
                      1000.0 / totals.mean_ms if totals is not None and totals.mean_ms > 0 else 0.0, stats.summary(),
                      states, alerts, pipeline.invalid_gaze_frames, interrupted, capture.captured)
