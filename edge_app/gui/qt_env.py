"""A clean Qt environment for PyQt6, and a display check before any Qt object exists.

Why: ``import cv2`` (the opencv-contrib-python wheel that mediapipe depends on) points
``QT_QPA_PLATFORM_PLUGIN_PATH`` and ``QT_QPA_FONTDIR`` at the Qt *5* plugins and fonts bundled
inside the cv2 package, and prepends its library folder to ``LD_LIBRARY_PATH``. PyQt6's Qt 6 then
looks for its platform plugin (xcb) there first; where that folder holds OpenCV's own xcb plugin the
application aborts with "Could not load the Qt platform plugin xcb", and only ``offscreen`` (which
never reads the variable's plugin) seems to work. :func:`prepare_qt_environment` removes what cv2
set (and any plugin path outside PyQt6), so PyQt6 loads the plugins it ships with.

Qt aborts the whole process (qFatal) when the platform plugin cannot reach a display, so
:func:`display_problem` checks first: the X server named by ``DISPLAY`` is really connected to
through libxcb (the library Qt's xcb plugin uses), or a Wayland socket is named.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from securegaze.errors import SecureGazeError

#: Platforms that need no display server.
HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc", "linuxfb", "eglfs")
_PLUGIN_VARIABLES = ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_PLUGIN_PATH", "QT_QPA_FONTDIR")


class NoDisplayError(SecureGazeError):
    """No display to open a window on; the message suggests the headless mode."""


def _cv2_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("cv2")
    return Path(spec.origin).resolve().parent if spec and spec.origin else None


def _pyqt6_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("PyQt6")
    return Path(spec.origin).resolve().parent if spec and spec.origin else None


def _inside(path: str, folder: Path | None) -> bool:
    if folder is None or not path:
        return False
    try:
        return Path(path).resolve().is_relative_to(folder)
    except (OSError, ValueError):
        return False


def prepare_qt_environment(environ: dict | None = None) -> dict[str, str]:
    """Remove the Qt plugin/font paths that do not belong to PyQt6 and cv2's ``LD_LIBRARY_PATH``
    entries from ``environ`` (default ``os.environ``). Returns what was removed, name -> old value.

    Must run before the QApplication is created (Qt reads these once, at start-up).
    """
    env = os.environ if environ is None else environ
    cv2_dir, qt_dir = _cv2_dir(), _pyqt6_dir()
    removed: dict[str, str] = {}
    for name in _PLUGIN_VARIABLES:
        value = env.get(name)
        if value is None:
            continue
        parts = [p for p in value.split(os.pathsep) if p]
        keep = [p for p in parts if _inside(p, qt_dir) and not _inside(p, cv2_dir)]
        if keep != parts:
            removed[name] = value
            if keep:
                env[name] = os.pathsep.join(keep)
            else:
                del env[name]
    value = env.get("LD_LIBRARY_PATH")
    if value is not None and cv2_dir is not None:
        # cv2 adds the literal "<cv2 dir>/../../lib64" (and an empty entry, i.e. the current folder).
        parts = value.split(os.pathsep)
        keep = [p for p in parts if p and not p.startswith(str(cv2_dir)) and not _inside(p, cv2_dir)]
        if keep != parts:
            removed["LD_LIBRARY_PATH"] = value
            if keep:
                env["LD_LIBRARY_PATH"] = os.pathsep.join(keep)
            else:
                del env["LD_LIBRARY_PATH"]
    return removed


def x_display_reachable(display: str) -> bool | None:
    """True/False when libxcb can tell, None when libxcb is not installed (then Qt cannot use xcb anyway)."""
    name = ctypes.util.find_library("xcb")
    if name is None:
        return None
    try:
        xcb = ctypes.CDLL(name)
    except OSError:
        return None
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    conn = xcb.xcb_connect(display.encode(), None)
    try:
        return xcb.xcb_connection_has_error(conn) == 0
    finally:
        xcb.xcb_disconnect(conn)


HEADLESS_HINT = ("run headless instead (edge-app run without --gui writes JSON lines), or render offscreen with "
                 "QT_QPA_PLATFORM=offscreen")


def display_problem(environ: dict | None = None) -> str | None:
    """None when a window can be opened; else one line saying why and suggesting headless mode."""
    env = os.environ if environ is None else environ
    platform = (env.get("QT_QPA_PLATFORM") or "").split(":")[0].strip()
    if platform in HEADLESS_PLATFORMS:
        return None
    wayland = env.get("WAYLAND_DISPLAY")
    display = env.get("DISPLAY")
    if platform == "wayland" or (not platform and wayland and not display):
        return None if wayland else f"no display available: QT_QPA_PLATFORM=wayland but WAYLAND_DISPLAY is not set; {HEADLESS_HINT}"
    if not display:
        return f"no display available (DISPLAY is not set); {HEADLESS_HINT}"
    reachable = x_display_reachable(display)
    if reachable is False:
        return f"no display available: cannot connect to the X server at DISPLAY={display}; {HEADLESS_HINT}"
    if reachable is None:
        return f"no display available: libxcb is not installed, so Qt cannot open DISPLAY={display}; {HEADLESS_HINT}"
    return None


def create_application(argv: list[str] | None = None):
    """The QApplication, after cleaning the environment and checking the display (NoDisplayError)."""
    prepare_qt_environment()
    problem = display_problem()
    if problem:
        raise NoDisplayError(problem)
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance()
    return app if app is not None else QApplication(list(argv or ["edge-app"]))
