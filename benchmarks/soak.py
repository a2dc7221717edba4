"""Faults under load: a long `edge-app run` whose camera is faster than processing, and trials killed with SIGKILL.

    python benchmarks/soak.py [--duration 600] [--json soak.json] [--kills 3]

Soak. The design rule is "the capture loop must never block on the display or the log: drop frames,
not time". `edge-app run --source camera:synthetic` is a simulated live camera filming the synthetic
driver, paced on the clock at `synthetic.fps` and endless. The pipeline's headless processing rate is
measured first (a short run at 30 fps), then the camera is paced at twice that rate (at most 240 fps,
the config's limit) so that frames must be dropped. The app runs as a subprocess for `--duration`
seconds of frames (from its first JSON line), then gets SIGINT (Ctrl-C: it stops and writes its
summary). Its resident memory (VmRSS of /proc/PID/status) is sampled every `--sample-s` seconds;
the growth is from the warm-up mark (1 minute, or a quarter of a shorter run) to the end (target:
under 5 %). The capture queue stayed bounded when every captured frame was either processed or
dropped (at most two are left over: the one waiting in the mailbox and the one whose processing
the SIGINT cut short) and the end-to-end latency (capture to end of processing) of the last window
is at most twice that of the first (a queue would make it grow with the run's length).

SIGKILL. `edge-app trial` on the synthetic participant is killed with SIGKILL once a random number of
frames (5-40) is committed, `--kills` times; each time the database must pass SQLite's integrity
check, hold the frames from 0 on without a gap (at least as many as were seen before the kill), and
`edge-app report` must read it (exit 0).

Uses the default model and the app's default audit database (a model without a record is scanned
first, about a minute, before the soak starts). Prints the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_app.signals import EXIT_SIGINT  # noqa: E402
from edge_app.trial.log import committed_frame_count  # noqa: E402

APP = [sys.executable, "-m", "edge_app.cli"]
MAX_FPS = 240.0  # synthetic.fps's upper bound in edge_app/config.py


def rss_kb(pid: int) -> int | None:
    """VmRSS of a process in kB (None once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def write_config(path: Path, fps: float) -> Path:
    path.write_text(f"synthetic:\n  fps: {fps:g}\n")
    return path


def run_app(args: list[str], log: Path) -> subprocess.CompletedProcess:
    with open(log, "w") as err:
        return subprocess.run(APP + args, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, check=False)


def measure_processing_fps(work: Path, frames: int) -> float:
    """Headless processing rate (1 / mean processing time per frame) of a short paced run."""
    summary = work / "calibrate.json"
    done = run_app(["run", "--source", "camera:synthetic", "--config", str(write_config(work / "cal.yaml", 30)),
                    "--max-frames", str(frames), "--benchmark", "--out", os.devnull, "--summary", str(summary)],
                   work / "calibrate.log")
    if done.returncode != 0:
        raise SystemExit(f"calibration run failed (exit {done.returncode}); see {work / 'calibrate.log'}")
    return float(json.loads(summary.read_text())["processing_fps"])


def e2e_p95(lines: Path, window_s: float) -> tuple[float, float, int]:
    """p95 end-to-end latency (ms) of the first and the last ``window_s`` seconds of frames, and the
    number of frame records."""
    t, e2e = [], []
    with open(lines) as fh:
        for line in fh:
            rec = json.loads(line)
            t.append(rec["timestamp_s"])
            e2e.append(rec["latency_ms"]["end_to_end"])
    t, e2e = np.asarray(t), np.asarray(e2e)
    first = e2e[t <= t[0] + window_s]
    last = e2e[t >= t[-1] - window_s]
    return float(np.percentile(first, 95)), float(np.percentile(last, 95)), len(t)


def soak(work: Path, duration_s: float, fps: float, sample_s: float, warmup_s: float) -> dict:
    lines, summary = work / "frames.jsonl", work / "summary.json"
    cmd = APP + ["run", "--source", "camera:synthetic", "--config", str(write_config(work / "soak.yaml", fps)),
                 "--out", str(lines), "--overwrite", "--summary", str(summary)]
    with open(work / "soak.log", "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
    samples: list[tuple[float, int]] = []  # (s since the first frame, kB)
    try:
        started = time.monotonic()
        # Startup: imports, poses, integrity check. The lines go to frames.jsonl.XXXX.part until the run ends.
        while not any(p.stat().st_size > 0 for p in work.glob(f"{lines.name}.*.part")):
            if proc.poll() is not None:
                raise SystemExit(f"edge-app run exited with {proc.returncode} before its first frame; "
                                 f"see {work / 'soak.log'}")
            if time.monotonic() - started > 600:
                raise SystemExit("no frame after 10 minutes of startup")
            time.sleep(0.2)
        startup_s = time.monotonic() - started
        t0 = time.monotonic()
        print(f"soak: first frame after {startup_s:.1f} s of startup; running {duration_s:g} s", flush=True)
        next_report = 60.0
        while (elapsed := time.monotonic() - t0) < duration_s:
            kb = rss_kb(proc.pid)
            if kb is None or proc.poll() is not None:
                raise SystemExit(f"edge-app run died during the soak (exit {proc.poll()}); see {work / 'soak.log'}")
            samples.append((round(elapsed, 2), kb))
            if elapsed >= next_report:
                print(f"  {elapsed:5.0f} s: RSS {kb / 1024:.1f} MiB, load {load_average()}", flush=True)
                next_report += 60.0
            time.sleep(min(sample_s, max(duration_s - elapsed, 0.01)))
        kb = rss_kb(proc.pid)
        if kb is not None:
            samples.append((round(time.monotonic() - t0, 2), kb))
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the run stops and writes its summary
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != EXIT_SIGINT:  # 130: stopped by SIGINT, recording and summary written
        raise SystemExit(f"edge-app run exited with {code} after SIGINT; see {work / 'soak.log'}")
    data = json.loads(summary.read_text())
    warm = min(samples, key=lambda s: abs(s[0] - warmup_s))
    end = samples[-1]
    first_p95, last_p95, records = e2e_p95(lines, min(60.0, duration_s / 4))
    leftover = data["captured"] - data["frames"] - data["dropped"]
    return {
        "command": " ".join(["edge-app"] + cmd[3:]), "pace_fps": fps, "duration_s": duration_s,
        "startup_s": round(startup_s, 1), "captured": data["captured"], "processed": data["frames"],
        "dropped": data["dropped"], "dropped_share": data["dropped"] / max(data["captured"], 1),
        "processing_fps": data["processing_fps"], "end_to_end_fps": data["fps"], "frame_records": records,
        "latency_ms": data["latency_ms"], "states": data["states"], "alerts": data["alerts"],
        "rss_warm_s": warm[0], "rss_warm_kb": warm[1], "rss_end_s": end[0], "rss_end_kb": end[1],
        "rss_max_kb": max(s[1] for s in samples), "rss_growth_pct": 100.0 * (end[1] - warm[1]) / warm[1],
        "rss_samples": samples, "left_over": leftover,
        "end_to_end_p95_ms_first_window": first_p95, "end_to_end_p95_ms_last_window": last_p95,
        "queue_bounded": 0 <= leftover <= 2 and last_p95 <= max(2.0 * first_p95, first_p95 + 1000.0 / fps),
    }


def kill_trial(work: Path, k: int, after_frames: int) -> dict:
    """One trial killed with SIGKILL once ``after_frames`` frames are committed; what survived."""
    db = work / f"killed-{k}.db"
    with open(work / f"trial-{k}.log", "w") as err:
        proc = subprocess.Popen(APP + ["trial", "--db", str(db), "--participant", f"SOAK{k}", "--fps", "30",
                                       "--dwell-s", "30"], stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
    seen = 0
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and seen < after_frames and time.monotonic() < deadline:
            time.sleep(0.02)
            seen = committed_frame_count(db) if db.exists() else 0
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    result = {"kill": k, "target_frames": after_frames, "killed_mid_trial": alive, "seen_before_kill": seen}
    try:
        conn = sqlite3.connect(db)
        try:
            result["integrity_check"] = conn.execute("PRAGMA integrity_check").fetchone()[0]
            frames = [r[0] for r in conn.execute("SELECT frame FROM frames WHERE trial_id = 1 ORDER BY frame")]
        finally:
            conn.close()
        result["opened"] = True
    except sqlite3.Error as exc:
        result.update(opened=False, error=str(exc))
        frames = []
    result["committed"] = len(frames)
    result["consecutive_from_0"] = frames == list(range(len(frames)))
    report = run_app(["report", str(db), "--out", str(work / f"report-{k}.html")], work / f"report-{k}.log")
    result["report_exit"] = report.returncode
    result["ok"] = (alive and result["opened"] and result.get("integrity_check") == "ok"
                    and result["consecutive_from_0"] and len(frames) >= seen and report.returncode == 0)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of frames in the soak (default 10 min)")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling interval, s")
    parser.add_argument("--fps", type=float, default=None, help="camera pace (default: 2x the measured processing "
                        f"rate, at most {MAX_FPS:g})")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLed trials after the soak (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run's files (logs, JSON lines) here")
    args = parser.parse_args()

    from securegaze.machine import machine_summary

    machine = machine_summary()
    print(f"machine: {machine}; load {load_average()}", flush=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="soak-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": machine, "load_before": load_average()}

    processing = measure_processing_fps(work, 150)
    fps = args.fps or min(MAX_FPS, round(2.0 * processing))
    result.update(measured_processing_fps=processing)
    print(f"headless processing rate {processing:.1f} fps; camera paced at {fps:g} fps", flush=True)
    if fps <= processing:
        print(f"warning: the camera ({fps:g} fps) is not faster than processing ({processing:.1f} fps): "
              "frames may not need dropping", flush=True)

    warmup = min(60.0, args.duration / 4)
    s = soak(work, args.duration, fps, args.sample_s, warmup)
    result["soak"] = s
    result["load_after"] = load_average()
    print(f"command: {s['command']}")
    print(f"frames: captured {s['captured']}, processed {s['processed']}, dropped {s['dropped']} "
          f"({100 * s['dropped_share']:.1f} %) in {s['duration_s']:g} s; processing {s['processing_fps']:.1f} fps, "
          f"end to end {s['end_to_end_fps']:.1f} fps")
    print(f"RSS: {s['rss_warm_kb'] / 1024:.1f} MiB at {s['rss_warm_s']:.0f} s (after warm-up), "
          f"{s['rss_end_kb'] / 1024:.1f} MiB at the end ({s['rss_end_s']:.0f} s), max "
          f"{s['rss_max_kb'] / 1024:.1f} MiB; growth {s['rss_growth_pct']:+.2f} % (target < 5 %: "
          f"{'met' if s['rss_growth_pct'] < 5 else 'MISSED'})")
    print(f"queue bounded: {'yes' if s['queue_bounded'] else 'NO'} (captured, neither processed nor dropped at "
          f"the end: {s['left_over']} of at most 2; end-to-end p95 {s['end_to_end_p95_ms_first_window']:.1f} ms "
          f"in the first window, {s['end_to_end_p95_ms_last_window']:.1f} ms in the last)")

    rng = random.Random(args.seed)
    kills = []
    for k in range(args.kills):
        r = kill_trial(work, k, rng.randint(5, 40))
        kills.append(r)
        print(f"SIGKILL {k}: {r['seen_before_kill']} frames committed before the kill, {r['committed']} in the "
              f"database after; opened {r['opened']}, integrity_check {r.get('integrity_check')}, consecutive "
              f"{r['consecutive_from_0']}, report exit {r['report_exit']}: {'ok' if r['ok'] else 'FAILED'}",
              flush=True)
    result["sigkill"] = kills
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"figures: {args.json}")
    print(f"files: {work}")
    ok = s["queue_bounded"] and s["dropped"] > 0 and all(r["ok"] for r in kills)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
