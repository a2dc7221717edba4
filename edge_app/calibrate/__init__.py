"""``edge-app calibrate``: the files the app reads, measured instead of assumed (docs/calibration.md).

* :mod:`~edge_app.calibrate.board` and :mod:`~edge_app.calibrate.camera`: a printable chessboard or
  ChArUco board at true size, and the camera's intrinsics from views of it (``camera.yaml``);
* :mod:`~edge_app.calibrate.driver` (with :mod:`~edge_app.calibrate.gaze_correction`, the file format
  and the correction the pipeline applies): a per-driver correction of the gaze;
* :mod:`~edge_app.calibrate.cabin`: the cabin zone map from the driver looking at each zone;
* :mod:`~edge_app.calibrate.gaze_session`: prompting targets and recording the gaze (driver, cabin);
* :mod:`~edge_app.calibrate.yaml_out`: every file written atomically and read back before it
  replaces anything; :mod:`~edge_app.calibrate.cli`: the commands.

Nothing is imported here, so ``edge_app.config`` and the pipeline can import the small modules
without pulling in OpenCV's calibration or the GUI.
"""
