"""SecureGaze Edge: gaze models, backdoor attacks and the SecureGaze defense."""

__version__ = "0.1.0"
