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
    passes each quarter of its steps. The scan's stages run side by side and report in turns, so each
    stage keeps its own count (one shared "last line" printed every turn)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._quarters: dict[str, int] = {}

    def __call__(self, event) -> None:
        total = max(int(event.total), 1)
        quarter = min(4, int(4 * event.step / total))
        if self._quarters.get(event.stage) != quarter:
            self._quarters[event.stage] = quarter
            self.console.print(f"integrity: scan {event.stage} {event.step}/{total}", highlight=False)


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
