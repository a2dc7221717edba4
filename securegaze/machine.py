"""A one-line description of the machine, printed by every benchmark next to its figures."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_summary() -> str:
    import numpy

    parts = [cpu_model(), f"{os.cpu_count()} cores", f"Python {platform.python_version()}", f"numpy {numpy.__version__}"]
    try:
        import torch

        threads = torch.get_num_threads()
        parts.append(f"torch {torch.__version__} ({threads} thread{'' if threads == 1 else 's'})")
    except ImportError:
        pass
    return ", ".join(parts)
