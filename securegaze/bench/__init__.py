"""Benchmarks of the defenses over a model zoo: detection (scores, threshold calibration, ROC) and
mitigation (before and after, against the reversed and the real triggers). They take any registered
detector and ask for its ablations by name, so a new method needs no change here."""
