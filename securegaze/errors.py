"""User-facing errors.

Every problem with something a user gave us (a file, a value, a model) is raised as a
:class:`SecureGazeError` whose message is one line naming the file or value and what was
expected. The command-line entry points print that line and exit with ``exit_code``; library
callers can catch the class.
"""

from __future__ import annotations


class SecureGazeError(Exception):
    """A problem with user input: one clear line, and a non-zero exit in the CLI."""

    exit_code = 2


class InputFileError(SecureGazeError):
    """A file is missing, unreadable, truncated or not in the expected format."""


class ModelFormatError(SecureGazeError):
    """A model file or bundle does not match what its manifest or the caller expects."""


class DatasetError(SecureGazeError):
    """A dataset file lacks what the reader needs (labels, images, subjects)."""


class ConfigError(SecureGazeError):
    """A setting has a value outside its allowed range or an unknown name."""


class CalibrationError(SecureGazeError):
    """A calibration's recordings cannot give a trustworthy result: too few views or frames, poor
    coverage, or a poor fit. The line says what is missing and nothing is written."""
