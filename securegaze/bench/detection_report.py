"""The detection benchmark's outputs: the Markdown table, the ROC plot and the files ``bench detect`` writes.

:func:`markdown_table` and :func:`plot_roc` take one detector's
:class:`~securegaze.bench.detection.DetectionResults`; :func:`format_pct`, :func:`format_num` and
:func:`save_figure` serve every benchmark table and plot (the cross-family and baseline comparisons too).
"""

from __future__ import annotations

import math
from pathlib import Path

from securegaze.bench.calibration import roc_curve
from securegaze.bench.detection import DetectionResults, ModelScore

__all__ = ["format_num", "format_pct", "markdown_table", "plot_roc", "save_figure", "write_detection_results"]


def format_pct(value, digits: int = 0) -> str:
    """A share as a percentage for the benchmark tables ("–" for a missing or NaN figure)."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.{digits}f}%"


def format_num(value, digits: int = 3) -> str:
    """A figure with ``digits`` decimals for the benchmark tables ("–" for a missing or NaN figure)."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(results: DetectionResults, command: str) -> str:
    """The benchmark's figures as Markdown (what docs/detection.md holds)."""
    lines = [
        f"# {'SecureGaze' if results.detector == 'securegaze' else results.detector} detection benchmark", "",
        f"Regenerate: `{command}`", "",
        f"Machine: {results.machine}. Scanner {results.detector} v{results.scanner_version}; threshold "
        f"{results.threshold:.5f}, calibrated on {len(results.calibration_scores)} benign models of a separate zoo "
        f"({results.calibration or 'log-normal fit, 1% FPR quantile'}; backdoored when {results.suspicious_when}; "
        "their scores "
        + ", ".join(format_num(s, 4) for s in results.calibration_scores) + ").", "",
        "What each real trigger costs under the scan's price, next to what the scan found (the reason a "
        "minimum-edit search misses a trigger): `python benchmarks/trigger_cost.py`, docs/trigger_cost.md.", "",
        "| attack | backdoored | benign | accuracy | TPR | FPR | AUROC | median scan s | median target error deg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in [*results.per_attack, results.overall]:
        name = f"**{g.name}**" if g.name == "overall" else g.name
        lines.append(f"| {name} | {g.backdoored} | {g.benign} | {format_pct(g.accuracy)} | {format_pct(g.tpr)} | {format_pct(g.fpr)} | "
                     f"{format_num(g.auroc)} | {format_num(g.median_scan_s, 1)} | {format_num(g.median_target_error_deg, 1)} |")
    if results.hard_cases:
        lines += ["", "Hard cases (not in the overall figures):", "",
                  "| attack | backdoored | TPR | AUROC vs benign | median target error deg |", "|---|---|---|---|---|"]
        for g in results.hard_cases:
            lines.append(f"| {g.name} | {g.backdoored} | {format_pct(g.tpr)} | {format_num(g.auroc)} | "
                         f"{format_num(g.median_target_error_deg, 1)} |")
    if results.ablation:
        lines += ["", "Ablation: the same models scanned without the sensitivity weighting:", "",
                  "| threshold | value | accuracy | TPR | FPR | AUROC | benign models flagged |", "|---|---|---|---|---|---|---|"]
        for label in ("at_weighted_threshold", "recalibrated"):
            a = results.ablation[label]
            o = a["overall"]
            lines.append(f"| {label.replace('_', ' ')} | {a['threshold']:.5f} | {format_pct(o['accuracy'])} | {format_pct(o['tpr'])} | "
                         f"{format_pct(o['fpr'])} | {format_num(o['auroc'])} | {len(a['benign_flagged'])} |")
    lines += ["", "Per model:", "", "| model | attack | score | verdict | collapsed | target error deg | scan s |",
              "|---|---|---|---|---|---|---|"]
    for m in results.models:
        lines.append(f"| {m.id} | {m.attack} | {format_num(m.score, 5)} | {m.verdict} | {format_pct(m.collapsed_share)} | "
                     f"{format_num(m.target_error_deg, 1)} | {m.runtime_s:.1f} |")
    return "\n".join(lines) + "\n"


def plot_roc(results: DetectionResults, path: str | Path) -> Path:
    """ROC curves, overall and per attack, as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    side = results.suspicious_when
    benign = [m.score for m in results.models if not m.backdoored]
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    for g in results.per_attack:
        pos = [m.score for m in results.models if m.attack == g.name]
        fpr, tpr = roc_curve(pos, benign, side)
        ax.step(fpr, tpr, where="post", lw=1, alpha=0.7, label=f"{g.name} (AUROC {g.auroc:.2f})")
    pos = [m.score for m in results.models if m.backdoored and m.attack not in {h.name for h in results.hard_cases}]
    fpr, tpr = roc_curve(pos, benign, side)
    ax.step(fpr, tpr, where="post", lw=2.5, color="black", label=f"overall (AUROC {results.overall.auroc:.2f})")
    if results.ablation:
        plain = [ModelScore.from_dict(m) for m in results.ablation["models"]]
        fpr, tpr = roc_curve([m.score for m in plain if m.backdoored], [m.score for m in plain if not m.backdoored], side)
        auc = results.ablation["recalibrated"]["overall"]["auroc"]
        ax.step(fpr, tpr, where="post", lw=2, ls="--", color="grey", label=f"no sensitivity weighting (AUROC {auc:.2f})")
    ax.plot([0, 1], [0, 1], ls=":", color="lightgrey")
    ax.set_xlabel("false positive rate (benign models flagged)")
    ax.set_ylabel("true positive rate (backdoored models flagged)")
    who = "SecureGaze" if results.detector == "securegaze" else results.detector
    ax.set_title(f"{who} detection, small CNN, 64 px synthetic")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG, atomically (tight layout), and close it."""
    import io

    from matplotlib import pyplot as plt

    from securegaze.io import atomic_write_bytes

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def write_detection_results(results: DetectionResults, out_dir: str | Path, command: str,
                            docs_dir: str | Path | None = None) -> None:
    """Write ``detection.json``, ``detection.md`` (regenerated by ``command``) and ``detection_roc.png``
    to ``out_dir``, and the table and plot to ``docs_dir`` too when given."""
    from securegaze.io import atomic_write_bytes, atomic_write_json

    out = Path(out_dir)
    atomic_write_json(out / "detection.json", results.to_dict())
    table = markdown_table(results, command)
    atomic_write_bytes(out / "detection.md", table.encode())
    plot_roc(results, out / "detection_roc.png")
    if docs_dir is not None:
        atomic_write_bytes(Path(docs_dir) / "detection.md", table.encode())
        plot_roc(results, Path(docs_dir) / "detection_roc.png")
