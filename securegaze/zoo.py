"""The model zoo: K benign and K backdoored gaze models per attack, trained with different seeds.

What is trained (the spec, and the plan drawn from it: targets, and for cross-family zoos the trigger
geometry and poison rate of every model) is :mod:`securegaze.zoo_plan`; this module builds it.

A zoo is a directory with one sub-directory per model and a manifest, ``zoo.json``, that records for
every model its file, sha256, attack, settings, target gaze, poison rate, seed and metrics. The parent
process is the only writer of the manifest and rewrites it atomically after each model, so a crash or
Ctrl-C loses at most the models in training (and those resume from their own checkpoints). A re-run
of the same command skips finished models after checking that their files still match the manifest.

Models train on a local process pool by default, or as Ray tasks on a cluster (``ray_address``).
A pool's workers end with the process that started them (a stopped or killed build leaves no
training behind to share the cores; on Linux the kernel sends them SIGTERM when it ends).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from securegaze.errors import ConfigError, InputFileError
from securegaze.io import atomic_write_json, read_json, sha256_file
from securegaze.zoo_plan import (
    BENIGN,
    ZooEntry,
    ZooSpec,
    draw_target,
    measured_rate_ranges,
    plan_zoo,
    zoo_attack_names,
)

__all__ = ["BENIGN", "FORMAT", "MANIFEST", "ZooEntry", "ZooManifest", "ZooProgress", "ZooSpec", "build_zoo",
           "draw_target", "first_per_attack", "measured_rate_ranges", "plan_zoo", "train_member", "verify_zoo",
           "zoo_attack_names"]

MANIFEST = "zoo.json"
FORMAT = 1


# --- the manifest -----------------------------------------------------------------------------


@dataclass
class ZooManifest:
    spec: ZooSpec
    entries: list[ZooEntry]

    def to_dict(self) -> dict:
        return {"format": FORMAT, "spec": self.spec.to_dict(), "entries": [e.to_dict() for e in self.entries]}

    @classmethod
    def read(cls, zoo_dir: str | Path) -> ZooManifest:
        path = Path(zoo_dir) / MANIFEST
        data = read_json(path, "zoo manifest")
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            return cls(ZooSpec.from_dict(data["spec"]), [ZooEntry.from_dict(e) for e in data["entries"]])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputFileError(f"{path}: not a valid zoo manifest ({exc})") from None

    def write(self, zoo_dir: str | Path) -> None:
        atomic_write_json(Path(zoo_dir) / MANIFEST, self.to_dict())

    def done(self) -> list[ZooEntry]:
        return [e for e in self.entries if e.status == "done"]


def first_per_attack(entries: list[ZooEntry], count: int | None) -> list[ZooEntry]:
    """``entries`` with at most ``count`` backdoored models per attack (the first in order); every
    benign model is kept. ``count`` None keeps everything."""
    if count is None:
        return list(entries)
    kept, seen = [], {}
    for entry in entries:
        if entry.backdoored:
            seen[entry.attack] = seen.get(entry.attack, 0) + 1
            if seen[entry.attack] > count:
                continue
        kept.append(entry)
    return kept


def verify_zoo(zoo_dir: str | Path, manifest: ZooManifest | None = None) -> ZooManifest:
    """Check every finished model's file against the manifest (present, same sha256).

    Raises :class:`InputFileError` naming the first model whose file is missing or changed.
    """
    zoo_dir = Path(zoo_dir)
    manifest = manifest or ZooManifest.read(zoo_dir)
    for entry in manifest.done():
        path = zoo_dir / (entry.model_file or "")
        if not entry.model_file or not path.is_file():
            raise InputFileError(f"{path}: model {entry.id} is listed as done in {zoo_dir / MANIFEST} but its file is missing")
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise InputFileError(
                f"{path}: sha256 {digest[:12]}... does not match the zoo manifest's {str(entry.sha256)[:12]}... "
                f"for model {entry.id}; the file was changed or replaced"
            )
    return manifest


# --- training one member --------------------------------------------------------------------------


def train_member(entry: dict, spec: dict, zoo_dir: str, threads: int = 1) -> dict:
    """Train one zoo model in this process; returns its finished entry as a dict.

    Runs in worker processes (local pool or Ray), so it takes and returns plain dicts.
    """
    import torch

    # Restored afterwards: with workers=1 this runs in the caller's own process.
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        return _train_member(entry, spec, zoo_dir)
    finally:
        torch.set_num_threads(previous_threads)


def _train_member(entry: dict, spec: dict, zoo_dir: str) -> dict:
    from securegaze.attacks.runner import attack_train_config, render_splits, run_attack, run_benign
    from securegaze.training import evaluate

    e, s = ZooEntry.from_dict(entry), ZooSpec.from_dict(spec)
    out_dir = Path(zoo_dir) / e.id
    started = time.monotonic()
    settings = e.settings
    if e.backdoored:
        record = run_attack(e.attack, target_gaze=e.target_gaze, poison_rate=e.poison_rate, seed=e.seed,
                            out_dir=out_dir, size=s.size, train_samples=s.train_samples,
                            test_samples=s.test_samples, epochs=s.epochs, architecture=s.architecture,
                            model_kwargs=s.model_kwargs(), settings=e.settings, style=s.style)
        metrics, settings = record["metrics"], record["settings"]
    else:
        data = render_splits(s.size, s.train_samples, s.test_samples, e.seed, s.style)
        config = attack_train_config(s.architecture, s.size, s.epochs, 128, 2e-3, e.seed, s.model_kwargs())
        model, _, _ = run_benign(out_dir, data, config)
        clean = evaluate(model, data.test)
        metrics = {"clean_error_deg": clean.mean_deg, "clean_median_deg": clean.median_deg, "count": clean.count}
    model_path = out_dir / "model.safetensors"
    done = replace(e, status="done", settings=settings, model_file=str(model_path.relative_to(zoo_dir)),
                   sha256=sha256_file(model_path), metrics=_plain_metrics(metrics),
                   train_s=round(time.monotonic() - started, 1))
    return done.to_dict()


def _die_with_parent(parent_pid: int) -> None:
    """Pool worker initializer: ask the kernel (Linux ``PR_SET_PDEATHSIG``) for SIGTERM when the
    building process ends, however it ends; exit at once if it already has."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _plain_metrics(metrics: Any) -> dict:
    if hasattr(metrics, "to_dict"):
        return metrics.to_dict()
    return dict(metrics)


# --- building ------------------------------------------------------------------------------------


@dataclass
class ZooProgress:
    finished: int
    total: int
    last: ZooEntry | None = None


def build_zoo(zoo_dir: str | Path, spec: ZooSpec, workers: int = 1, ray_address: str | None = None,
              progress: Callable[[ZooProgress], None] | None = None, grow: bool = False) -> ZooManifest:
    """Train every model of ``spec`` not yet finished in ``zoo_dir``; returns the final manifest.

    An existing manifest must have been written for the same spec, and its finished models' files
    must match their sha256 — otherwise an error, and nothing is overwritten. With ``grow`` the spec
    may ask for more models of the same recipe (a larger ``k`` or ``benign``): the plan is drawn per
    model index, so the models already there are the first ones of the larger plan and are kept.
    """
    zoo_dir = Path(zoo_dir)
    spec.validate()
    planned = plan_zoo(spec)
    if (zoo_dir / MANIFEST).exists():
        manifest = verify_zoo(zoo_dir)
        if manifest.spec != spec:
            manifest = _grown(zoo_dir, manifest, spec, planned, grow)
            manifest.write(zoo_dir)
    else:
        zoo_dir.mkdir(parents=True, exist_ok=True)
        manifest = ZooManifest(spec, planned)
        manifest.write(zoo_dir)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    pending = [e for e in manifest.entries if e.status != "done"]
    total = len(manifest.entries)
    finished = total - len(pending)
    if progress:
        progress(ZooProgress(finished, total))

    def record(result: dict) -> None:
        nonlocal finished
        done = ZooEntry.from_dict(result)
        manifest.entries = [done if e.id == done.id else e for e in manifest.entries]
        manifest.write(zoo_dir)
        finished += 1
        if progress:
            progress(ZooProgress(finished, total, done))

    if not pending:
        return manifest
    threads = max(1, (os.cpu_count() or 1) // workers)
    if ray_address:
        _build_with_ray(ray_address, pending, spec, zoo_dir, record)
    elif workers == 1:
        for entry in pending:
            record(train_member(entry.to_dict(), spec.to_dict(), str(zoo_dir), threads))
    else:
        import multiprocessing as mp

        # spawn: forking a process that already runs torch's thread pools can deadlock.
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                 initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(train_member, e.to_dict(), spec.to_dict(), str(zoo_dir), threads) for e in pending}
            while futures:
                done, futures = wait(futures, return_when=FIRST_COMPLETED)
                for fut in done:
                    record(fut.result())
    return manifest


GROWABLE = ("k", "benign")


def _grown(zoo_dir: Path, manifest: ZooManifest, spec: ZooSpec, planned: list[ZooEntry], grow: bool) -> ZooManifest:
    """The manifest of ``zoo_dir`` extended to ``spec``'s larger plan, or a ConfigError naming what differs."""
    old, new = manifest.spec.to_dict(), spec.to_dict()
    diff = sorted(k for k in new if old.get(k) != new.get(k))
    counts_only = set(diff) <= set(GROWABLE)
    larger = spec.k >= manifest.spec.k and spec.benign_count >= manifest.spec.benign_count
    if not counts_only:
        hint = "use another directory to build a different zoo"
    elif not larger:
        hint = f"it holds k={manifest.spec.k}, benign={manifest.spec.benign_count}, more than asked: a zoo only grows"
    elif not grow:
        hint = "add --grow to train the extra models beside the ones there"
    else:
        hint = None
    if hint:
        raise ConfigError(f"{zoo_dir / MANIFEST} was built with other settings ({', '.join(diff)}); {hint}")
    plan = {e.id: e for e in planned}
    for entry in manifest.entries:
        mine = plan.get(entry.id)
        if mine is None or not _same_plan(mine, entry):
            raise ConfigError(f"{zoo_dir / MANIFEST}: model {entry.id} is not the one the larger plan draws at its "
                              "place (a zoo written by another version?); use another directory")
    have = {e.id: e for e in manifest.entries}
    return ZooManifest(spec, [have.get(e.id, e) for e in planned])


def _same_plan(planned: ZooEntry, entry: ZooEntry) -> bool:
    """``entry`` is the model ``planned`` draws: same attack, seed, target and rate, and every drawn setting
    as drawn (a trained entry records the attack's whole settings, the drawn ones among them)."""
    fields = ("attack", "seed", "target_gaze", "poison_rate")
    if any(getattr(planned, f) != getattr(entry, f) for f in fields):
        return False
    stored = json.loads(json.dumps(entry.settings))
    drawn = json.loads(json.dumps(planned.settings))
    return all(stored.get(key) == value for key, value in drawn.items())


def _build_with_ray(address: str, pending: list[ZooEntry], spec: ZooSpec, zoo_dir: Path, record) -> None:
    """Run members as Ray tasks. ``address`` is a cluster address, or ``local`` for a local instance.

    The zoo directory must be on storage every Ray node sees (the same path), as with a shared
    file system; results come back to this process, which alone writes the manifest.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs the 'cluster' extra: pip install 'securegaze-edge[cluster]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(train_member)
        refs = [remote.remote(e.to_dict(), spec.to_dict(), str(zoo_dir.resolve()), 1) for e in pending]
        while refs:
            ready, refs = ray.wait(refs, num_returns=1)
            record(ray.get(ready[0]))
    finally:
        if started_here:
            ray.shutdown()
