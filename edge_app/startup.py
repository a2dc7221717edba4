"""Start-up steps shared by ``edge-app run`` (headless and ``--gui``) and ``edge-app trial``.

Before the first frame, both commands load the settings with the command-line overrides of the
integrity check (``--policy``, ``--audit-db``), run the startup integrity check (docs/architecture.md
section 7) with its progress on stderr, and open the gaze engine for exactly the ONNX that was
checked. The commands print; these functions only decide (the progress printer writes to the
console it is given).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from securegaze.errors import ConfigError


def load_edge_config(config_path: Path | None, policy: str | None = None, audit_db: Path | None = None,
                     clean: str | None = None):
    """The :class:`~edge_app.config.EdgeConfig` from ``config_path`` (None: the defaults), with
    ``policy`` (block | warn), ``audit_db`` and ``clean`` (the scan's clean faces) replacing the
    file's integrity settings when given."""
    from edge_app.config import load_config
    from edge_app.integrity import check_clean_spec

    config = load_config(config_path)
    updates: dict = {}
    if policy is not None:
        if policy not in ("block", "warn"):
            raise ConfigError(f"--policy must be block or warn, got {policy!r}")
        updates["policy"] = policy
    if audit_db is not None:
        updates["audit_db"] = audit_db
    if clean is not None:
        try:
            updates["clean"] = check_clean_spec(clean)
        except ValueError as exc:
            raise ConfigError(f"--clean {exc}") from None
    if updates:
        config = config.model_copy(update={"integrity": config.integrity.model_copy(update=updates)})
    return config


class ScanProgressPrinter:
    """Prints the integrity scan's progress to ``console``: a line when a stage starts and when it
    passes each quarter of its steps, with the time since the scan began and, within a stage, about
    how long the stage has left at its pace so far (a 224-px model's scan takes tens of minutes on a
    small CPU: the driver should see it coming). The scan's stages run side by side and report in
    turns, so each stage keeps its own count (one shared "last line" printed every turn).
    ``clock``: seconds, monotonic (a test's own)."""

    def __init__(self, console: Console, clock=None) -> None:
        import time

        self.console = console
        self.clock = clock or time.monotonic
        self._quarters: dict[str, int] = {}
        self._begun: dict[str, tuple[float, int]] = {}  # stage -> (when its first event came, its step then)
        self._started: float | None = None

    def __call__(self, event) -> None:
        now = self.clock()
        self._started = now if self._started is None else self._started
        total = max(int(event.total), 1)
        begun, first_step = self._begun.setdefault(event.stage, (now, int(event.step)))
        quarter = min(4, int(4 * event.step / total))
        if self._quarters.get(event.stage) == quarter:
            return
        self._quarters[event.stage] = quarter
        when = f"{_duration(now - self._started)} into the scan"
        done = int(event.step) - first_step
        if 0 < done and event.step < total:
            left = (now - begun) / done * (total - int(event.step))
            when += f"; this stage ends in about {_duration(left)}"
        self.console.print(f"integrity: scan {event.stage} {event.step}/{total} ({when})", highlight=False)


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``1 h 05 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def open_checked_engine(config, model_path: Path, result):
    """The gaze engine of ``config.engine`` for ``model_path``, which the integrity check passed
    (``result``, not blocked). An engine whose ONNX is not the one that was scanned is refused
    (ConfigError): a TensorRT engine built from another ONNX must not inherit this audit."""
    from edge_app.engines import create_engine

    e = config.engine
    engine = create_engine(e.kind, model_path, e.providers, e.threads, e.tensorrt_engine,
                           expected_onnx_sha256=result.model_sha256, trt_cache_dir=e.cache_dir)
    if engine.onnx_sha256 != result.model_sha256:
        engine.close()
        raise ConfigError(f"{model_path}: the engine runs ONNX {engine.onnx_sha256[:12]} but the integrity check "
                          f"scanned {result.model_sha256[:12]}")
    return engine


def check_and_open_engine(config, model_path: Path, progress=None):
    """The startup integrity check, then the engine: ``(IntegrityResult, engine or None)``; the
    engine is None when the policy blocked the model. ``progress``: the scan's callback."""
    from edge_app.integrity import IntegrityChecker

    result = IntegrityChecker(config.integrity, app_config=config).check(model_path, progress=progress)
    if result.blocked:
        return result, None
    return result, open_checked_engine(config, model_path, result)
