"""The Qt overlay (PyQt6 is imported only inside this package; the headless app needs no display)."""
