"""The comparison page of the detectors (docs/baselines.md) and its ROC figure (docs/baselines_roc.png).

:func:`write_comparison` writes what ``securegaze bench detect --detectors a,b,...`` produces: each
detector's own files (``detection.json``, ``detection.md``, ``detection_roc.png`` in its folder, see
:func:`~securegaze.bench.baselines.detector_out_dir`), ``OUT/baselines.json`` with every detector's
results, and the page and figure (in ``OUT`` and, with ``--docs``, in the docs folder):

* the regenerate command, the machine, and how large the zoos were;
* one table, SecureGaze first: AUROC per attack and overall, accuracy / TPR / FPR at each detector's
  calibrated threshold, median recovered-target error, median scan time;
* every model's score under every detector; one ROC figure with every detector's overall curve;
* the mitigation methods' table (:func:`mitigation_table_from`: ``OUT/mitigation_methods.json`` of
  ``securegaze bench mitigate --methods ...`` on the same ``--out``), or a line saying how to get it;
* the published DRMGuard figures as a sanity anchor, next to the same figures from this run; the
  explanation of any large difference is left to the person who reads the figures.

Scores are on each detector's own scale and side, so only AUROC and the threshold decisions compare
across detectors, never the raw scores.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from securegaze.bench.baselines import detector_out_dir
from securegaze.bench.calibration import roc_curve
from securegaze.bench.detection import DetectionResults
from securegaze.bench.detection_report import format_num, format_pct, save_figure, write_detection_results

__all__ = ["DEFAULT_PAGE", "DRMGUARD_ANCHOR", "MITIGATION_HOOK", "anchor_figures", "comparison_markdown", "mitigation_table_from",
           "plot_comparison_roc", "write_comparison"]

#: The published comparison the issue asks to quote (DRMGuard, MPIIFaceGaze, four attacks): AUROC
#: averaged over the attacks, per baseline.
DRMGUARD_ANCHOR = {"neural_cleanse": 0.379, "feature_re": 0.599}
#: What the page says where the mitigation table goes when there is none (:func:`mitigation_table_from`).
MITIGATION_HOOK = ("No mitigation comparison in this run's folder: `securegaze bench mitigate --zoo ZOO --out OUT "
                   "--methods securegaze,...` on the same OUT writes OUT/mitigation_methods.json, and the next "
                   "`securegaze bench detect --detectors ...` places its table here.")
DISPLAY_NAMES = {"securegaze": "SecureGaze"}


#: The comparison page's name under ``--docs`` unless another is given (``bench detect --docs-page``).
DEFAULT_PAGE = "baselines"
#: Name of the generated section of docs/baselines.md (``securegaze.io.write_generated_section``).
GENERATED_SECTION = "bench detect --detectors"


def _display(name: str) -> str:
    return DISPLAY_NAMES.get(name, name)


def _threshold(r: DetectionResults) -> str:
    return f"{r.threshold:.4g}" if math.isfinite(r.threshold) else "none"


def _attacks(results: Sequence[DetectionResults]) -> list[str]:
    return sorted({g.name for r in results for g in r.per_attack})


def anchor_figures(results: Sequence[DetectionResults]) -> dict[str, dict[str, float | None]]:
    """For each anchored baseline: the published figure, this run's AUROC averaged over attacks (the
    published convention) and the overall AUROC (every backdoored model against every benign one);
    None where the baseline was not run."""
    by_name = {r.detector: r for r in results}
    figures = {}
    for name, published in DRMGUARD_ANCHOR.items():
        r = by_name.get(name)
        per_attack = [g.auroc for g in r.per_attack if g.auroc == g.auroc] if r else []
        figures[name] = {"published": published,
                         "mean_per_attack": statistics.fmean(per_attack) if per_attack else None,
                         "overall": r.overall.auroc if r else None}
    return figures


def _zoo_lines(results: Sequence[DetectionResults]) -> list[str]:
    first = results[0]
    bd, bn = first.overall.backdoored, first.overall.benign
    counts = ", ".join(f"{g.backdoored} {g.name}" for g in first.per_attack)
    zoos = sorted({m.zoo for m in first.models})
    named = ", ".join(f"`{z}`" for z in zoos)
    return [f"Scored zoo{'s' if len(zoos) > 1 else ''} {named}: {bn} benign and {bd} backdoored models "
            f"({counts or 'none'}); each detector's threshold is calibrated on the {len(first.calibration_scores)} "
            f"benign models of a separate calibration zoo, never on a scored model. With this few models an AUROC "
            f"moves by 1/{max(bd * bn, 1)} per swapped pair: read the figures with that resolution."]


def comparison_markdown(results: Sequence[DetectionResults], command: str,
                        mitigation_table: str | None = None, figure: str = f"{DEFAULT_PAGE}_roc.png") -> str:
    """The comparison page; ``results`` as :func:`~securegaze.bench.baselines.run_detector_comparison`
    returns them (SecureGaze first); ``figure``: the file name of its ROC figure, beside the page."""
    attacks = _attacks(results)
    lines = ["# Backdoor detectors compared: SecureGaze and the baselines", "",
             f"Regenerate: `{command}`", "", f"Machine: {results[0].machine}", "", *_zoo_lines(results), "",
             "What each baseline does and how it was adapted to a gaze output: docs/baselines_methods.md.", "",
             "## Detection", "",
             "AUROC needs no threshold; accuracy, TPR and FPR are at each detector's own threshold, calibrated on "
             "the benign calibration models on its own side and scale (backdoored when the score is on the "
             "side named).", "",
             "| detector | " + " | ".join(f"AUROC {a}" for a in attacks) + " | **AUROC overall** | accuracy | TPR | "
             "FPR | threshold | backdoored when | median target error deg | median scan s |",
             "|---|" + "---|" * (len(attacks) + 8)]
    for r in results:
        by_attack = {g.name: g for g in r.per_attack}
        o = r.overall
        cells = [format_num(by_attack[a].auroc) if a in by_attack else "–" for a in attacks]
        lines.append(f"| {_display(r.detector)} {r.scanner_version} | " + " | ".join(cells)
                     + f" | **{format_num(o.auroc)}** | {format_pct(o.accuracy)} | {format_pct(o.tpr)} | "
                     f"{format_pct(o.fpr)} | {_threshold(r)} | {r.suspicious_when} | "
                     f"{format_num(o.median_target_error_deg, 1)} | {format_num(o.median_scan_s, 1)} |")
    lines += ["", "Thresholds: " + "; ".join(f"{_display(r.detector)} {_threshold(r)} ({r.calibration or 'fit'})"
                                           for r in results) + ".", "",
              f"![ROC of every detector]({figure})", "", "## Scores per model", "",
              "Each detector's score on its own scale; `*` marks a model flagged at that detector's threshold.", "",
              "| model | attack | " + " | ".join(_display(r.detector) for r in results) + " |",
              "|---|---|" + "---|" * len(results)]
    scores = [{m.id: m for m in r.models} for r in results]
    for m in results[0].models:
        cells = []
        for by_id in scores:
            s = by_id.get(m.id)
            cells.append("–" if s is None else format_num(s.score, 4) + (" *" if s.verdict == "backdoored" else ""))
        lines.append(f"| {m.id} | {m.attack} | " + " | ".join(cells) + " |")
    lines += ["", "## Mitigation", "", mitigation_table.strip() if mitigation_table else MITIGATION_HOOK, "",
              "## Sanity anchor: the published DRMGuard comparison", "",
              "DRMGuard's comparison on MPIIFaceGaze (four attacks) reports AUROC averaged over the attacks of "
              + ", ".join(f"{v:.3f} for {_display(k)}" for k, v in DRMGUARD_ANCHOR.items()) + ". This run:", "",
              "| baseline | published (MPIIFaceGaze) | this run, mean over attacks | this run, overall |",
              "|---|---|---|---|"]
    for name, f in anchor_figures(results).items():
        ran = f["overall"] is not None
        lines.append(f"| {_display(name)} | {f['published']:.3f} | "
                     f"{format_num(f['mean_per_attack']) if ran else 'not run'} | "
                     f"{format_num(f['overall']) if ran else 'not run'} |")
    lines += ["", "Why a baseline here does far better or far worse than published: to be written from the "
              "figures above (scores per model, the recovered targets, the ROC).", ""]
    return "\n".join(lines)


def plot_comparison_roc(results: Sequence[DetectionResults], path: str | Path) -> Path:
    """One overall ROC curve per detector (SecureGaze drawn heavier), as a PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    for r in results:
        hard = {h.name for h in r.hard_cases}
        pos = [m.score for m in r.models if m.backdoored and m.attack not in hard]
        neg = [m.score for m in r.models if not m.backdoored]
        fpr, tpr = roc_curve(pos, neg, r.suspicious_when)
        heavy = r.detector == "securegaze"
        ax.step(fpr, tpr, where="post", lw=2.5 if heavy else 1.3, color="black" if heavy else None,
                label=f"{_display(r.detector)} (AUROC {format_num(r.overall.auroc, 2)})")
    ax.plot([0, 1], [0, 1], ls=":", color="lightgrey")
    ax.set_xlabel("false positive rate (benign models flagged)")
    ax.set_ylabel("true positive rate (backdoored models flagged)")
    ax.set_title("Backdoor detectors, every attack pooled")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)


def mitigation_table_from(bench_dir: str | Path) -> str | None:
    """The table of :func:`~securegaze.bench.mitigation_methods.mitigation_methods_table` over the reports in
    ``bench_dir/mitigation_methods.json`` (``securegaze bench mitigate --methods``), or None when that file
    is not there; a file that holds no such reports is one InputFileError line naming it."""
    from securegaze.bench.mitigation import MitigationReport
    from securegaze.bench.mitigation_methods import mitigation_methods_table
    from securegaze.errors import InputFileError
    from securegaze.io import read_json

    path = Path(bench_dir) / "mitigation_methods.json"
    if not path.is_file():
        return None
    data = read_json(path, "mitigation methods results")
    try:
        reports = [MitigationReport(**m) for m in data["models"]]
    except (KeyError, TypeError) as exc:
        raise InputFileError(f"{path}: not the results of bench mitigate --methods ({exc})") from None
    return mitigation_methods_table(reports) if reports else None


def write_comparison(results: Sequence[DetectionResults], out_dir: str | Path, command: str,
                     docs_dir: str | Path | None = None, mitigation_table: str | None = None,
                     docs_page: str = DEFAULT_PAGE) -> list[Path]:
    """Write each detector's own files, ``baselines.json``, ``baselines.md`` and ``baselines_roc.png`` to
    ``out_dir`` (the page and figure to ``docs_dir`` too, as ``<docs_page>.md`` and
    ``<docs_page>_roc.png``: a second zoo's comparison beside the first); returns the page paths written.

    In ``out_dir`` the page is the whole file. In ``docs_dir`` it is the file's generated section
    (:data:`GENERATED_SECTION`): what was written there by hand after a run (what the figures show,
    earlier runs) is kept when the page is regenerated."""
    from securegaze.io import atomic_write_bytes, atomic_write_json, write_generated_section

    for r in results:
        write_detection_results(r, detector_out_dir(out_dir, r.detector), command)
    atomic_write_json(Path(out_dir) / "baselines.json", {"detectors": [r.to_dict() for r in results]})
    page = comparison_markdown(results, command, mitigation_table)
    written = [atomic_write_bytes(Path(out_dir) / "baselines.md", page.encode())]
    plot_comparison_roc(results, Path(out_dir) / "baselines_roc.png")
    if docs_dir is not None:
        figure = f"{docs_page}_roc.png"
        docs_text = comparison_markdown(results, command, mitigation_table, figure)
        written.append(write_generated_section(Path(docs_dir) / f"{docs_page}.md", docs_text, GENERATED_SECTION))
        plot_comparison_roc(results, Path(docs_dir) / figure)
    return written
