"""A headless run of the driver-monitoring loop: integrity check, engine, frames to JSON lines, summary.

What ``edge-app run`` does without ``--gui``, as one library call. It prints nothing: status lines
go to a ``notify`` callback, scan progress to ``progress``, and the outcome comes back as a
:class:`HeadlessRun` for the command line to print and write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_app.drive_scoring import DriveScorer
from edge_app.jsonlines import JsonLinesWriter
from edge_app.outputs import OutputTarget
from edge_app.pipeline import Pipeline, RunSummary, run_pipeline
from edge_app.run_report import RunTally
from edge_app.signals import StopSignals, signal_label
from edge_app.sources import SyntheticSource
from edge_app.startup import check_and_open_engine
from securegaze.io import shown

#: Frames left out of the timing with ``--benchmark`` (the first inferences warm caches up).
BENCHMARK_WARMUP_FRAMES = 5


@dataclass
class HeadlessRun:
    """The outcome of :func:`run_headless`.

    ``integrity``: the start-up check's result (``blocked``: the model was never run, the frames were
    monitored in degraded mode, head pose only); ``summary``: the
    pipeline's :class:`~edge_app.pipeline.RunSummary`; ``data``: the run summary as
    plain data (what ``--summary`` writes); ``log_lines_dropped`` / ``log_error``: JSON lines that could
    not be written; ``drive``: the synthetic drive's score (None for other sources).
    """

    integrity: Any
    summary: RunSummary | None
    data: dict
    log_lines_dropped: int = 0
    log_error: BaseException | None = None
    drive: DriveScorer | None = None

    @property
    def blocked(self) -> bool:
        return self.integrity.blocked


def run_headless(config, source, model_path: Path, zone_map, intrinsics=None, out: str | OutputTarget | None = None,
                 max_frames: int | None = None, benchmark: bool = False,
                 notify: Callable[[str], None] = lambda line: None, progress=None,
                 signals: StopSignals | None = None) -> HeadlessRun:
    """Check ``model_path``, then run ``source`` through the pipeline with one JSON line per frame to ``out``.

    A blocked model is never run: the frames are monitored in degraded mode (head pose only,
    :mod:`edge_app.degraded`), each JSON line saying so (``mode``, ``mode_reason``). ``out`` is opened
    only once every check has passed (a refused run leaves an earlier file as it was). Live sources
    drop stale frames and, when the disk cannot keep up, log lines (counted); recorded ones wait.

    ``signals`` (the caller's :class:`~edge_app.signals.StopSignals`, entered): armed once the
    integrity check is done, so a signal during the check raises KeyboardInterrupt out of this call
    (nothing was opened) and one later stops the frame loop, after which ``out`` is closed as usual.
    """
    notify(f"integrity: checking {model_path} (policy {config.integrity.policy})")
    result, engine = check_and_open_engine(config, model_path, progress)
    stop = None
    if signals is not None:
        signals.armed = True  # from here on a signal only sets signals.stop (see StopSignals)
        stop = signals.stop
    for note in result.notes:
        notify(f"integrity: note: {note}")
    notify(f"integrity: {result.reason} [{result.source}]")
    if engine is None:
        notify(f"degraded mode: the gaze model is not run; head-pose-only distraction monitoring on "
               f"{source.description}")
    else:
        for note in engine.notes:
            notify(f"engine: note: {note}")
        notify(f"engine: {engine.name} {engine.providers}, input {engine.input_size} px; source: {source.description}")
    pipeline = Pipeline(config, engine, zone_map, intrinsics, result)
    drop = {"auto": None, "always": True, "never": False}[config.capture.drop_stale]
    live = source.live if drop is None else drop
    writer = JsonLinesWriter(out, drop_when_full=live)
    scorer = (DriveScorer(source.driver, engine, pipeline, config.normalisation)
              if isinstance(source, SyntheticSource) else None)
    tally = RunTally()

    def sink(record) -> None:
        tally.add(record)
        line = record.to_json()
        if result.verdict == "backdoored" and not result.blocked:  # blocked: the mode_reason says it
            line["integrity_warning"] = result.reason
        writer.write(line)
        if scorer is not None:
            scorer.add(record)

    try:
        summary = run_pipeline(pipeline, source, sink, drop, config.capture.queue_size, max_frames,
                               warmup_frames=BENCHMARK_WARMUP_FRAMES if benchmark else 0, stop=stop)
    finally:
        writer.close()
        pipeline.close()
    data = {"source": source.description, "model": str(model_path), "integrity": result.summary(),
            "frames": summary.frames, "captured": summary.captured, "dropped": summary.dropped,
            "wall_s": summary.wall_s, "fps": summary.fps, "processing_fps": summary.processing_fps,
            "latency_ms": summary.latency, "states": summary.states, "alerts": summary.alerts,
            "invalid_gaze_frames": summary.invalid_gaze_frames, "log_lines_written": writer.written,
            "log_lines_dropped": writer.dropped,
            "interrupted": summary.interrupted,
            "interrupted_by": signal_label(signals.signum) if summary.interrupted and signals is not None else None,
            "blocked": result.blocked, "tally": tally.to_dict(),
            "unreadable_images": [shown(path) for path in getattr(source, "unreadable", [])]}
    if scorer is not None:
        data.update(scorer.summary())
    return HeadlessRun(result, summary, data, writer.dropped, writer.error, scorer)
