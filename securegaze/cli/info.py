"""``securegaze info``: the version, the gaze conventions, the registered detectors and mitigation methods."""

from __future__ import annotations

from securegaze import __version__
from securegaze.cli.support import console
from securegaze.geometry import CONVENTION


def info() -> None:
    """Print the version, the gaze conventions every command uses, the detectors ``scan --detector`` takes
    and the mitigation methods ``bench mitigate --methods`` takes."""
    from securegaze.bench.baselines import detector_rows
    from securegaze.defense.mitigations import MITIGATIONS

    console.print(f"securegaze {__version__}")
    console.print(f"gaze convention: {CONVENTION}")
    console.print("detectors (securegaze scan --detector NAME, securegaze bench detect --detectors A,B):")
    for row in detector_rows():
        console.print(f"  {row['name']} {row['version']}: backdoored when the score is {row['suspicious_when']} "
                      f"the threshold; default threshold {row['threshold']} ({row['source']})", soft_wrap=True)
    console.print("mitigation methods (securegaze bench mitigate --methods A,B):")
    for name in MITIGATIONS.names():
        method = MITIGATIONS.get(name)
        console.print(f"  {name} {method.version}: {method.source}", soft_wrap=True)
