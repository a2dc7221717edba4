"""SecureGaze Edge, the driver-monitoring application (``edge-app``).

A pipeline of small stages, one module each, passing a :class:`~edge_app.pipeline.FrameRecord`:
``sources`` (camera, video, image folder, synthetic driver; capture thread) -> ``face``
(MediaPipe Face Mesh with iris) -> ``head_pose`` (solvePnP) -> ``normalisation`` (Zhang et al.
2018) -> ``engines`` (ONNX Runtime or TensorRT) -> ``smoothing`` (One Euro) -> ``zones`` ->
``attention`` (timers and alerts), behind the startup ``integrity`` check. ``cli`` is the command
line; ``config`` the settings file. This package imports :mod:`securegaze`, never the reverse.
"""
