"""Printable physical triggers at true size (docs/architecture.md section 9): a PDF or PNG page per trigger.

The page is drawn from the very :class:`~securegaze.data.triggers.Trigger` objects the attacks
train with and the renderer draws (``create_trigger("tape")`` etc.), so a printed strip is the one
the backdoor was planted with. Those definitions are already in millimetres; what ties them to a
person's face is the renderer's scale: it places triggers on a head whose interpupillary distance
is :data:`~securegaze.data.triggers.ASSUMED_IPD_MM` (63 mm, the adult mean, Dodgson 2004). On a
participant with another IPD the same strip covers a different share of the face, so the page can
be scaled by ``ipd_mm / 63`` to keep the trigger's size *relative to the face* equal to the
training one (``ipd_mm`` None: print the definition's millimetres unchanged).

Layout (all in mm, origin at the page's top-left corner, y down):

* the trigger's texture (:meth:`Trigger.texture`), centred horizontally, its top at
  :data:`TRIGGER_TOP_MM`, with a thin dashed cut line around its bounding box (paper tape is
  nearly white on white paper: the line is what one cuts, or lays real tape over);
* a scale bar of :data:`SCALE_BAR_MM` with 10-mm ticks below it, to check with a ruler that the
  printer did not "fit to page";
* a label: kind, size, placement and the scale.

Drawn with matplotlib's PDF (vector page, embedded raster texture) or Agg (PNG) backend; the true-size page
helpers (:func:`page_figure`, :func:`draw_scale_bar`, :func:`save_page`) also draw the camera-calibration
board of ``edge-app calibrate board``.
Library code: nothing is printed; the file is written atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from securegaze.data.triggers import ASSUMED_IPD_MM, Trigger, create_trigger
from securegaze.errors import ConfigError

MM_PER_INCH = 25.4
#: Paper sizes, (width, height) mm, portrait.
PAPER_MM = {"a4": (210.0, 297.0), "letter": (215.9, 279.4)}
#: Triggers one can print, by kind; each is the attacks' default object of that kind.
PRINTABLE_KINDS = ("tape", "sticker", "glasses")
TRIGGER_TOP_MM = 40.0
SCALE_BAR_MM = 50.0
#: Texture resolution of the embedded image, px per mm (20 px/mm = 508 dpi, above any office printer).
TEXTURE_PX_PER_MM = 20.0
#: IPDs outside this range are not adult faces (Dodgson 2004: 95 % of adults within 53-73 mm).
IPD_RANGE_MM = (45.0, 80.0)


@dataclass(frozen=True)
class PrintLayout:
    """Where things went on the page, mm from the top-left corner: ``trigger_box`` and
    ``scale_bar`` as (x0, y0, x1, y1); ``scale`` = printed size / definition size; ``page_mm``."""

    page_mm: tuple[float, float]
    trigger_box: tuple[float, float, float, float]
    scale_bar: tuple[float, float, float, float]
    scale: float
    trigger_size_mm: tuple[float, float]
    label: str


def trigger_for_kind(kind: str) -> Trigger:
    """The trigger the attack of that kind uses by default (tape on the forehead, the checker
    sticker on the cheek, glasses frames)."""
    if kind not in PRINTABLE_KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(PRINTABLE_KINDS)}, got {kind!r}")
    return create_trigger(kind)


def plan_layout(trigger: Trigger, paper: str = "a4", ipd_mm: float | None = None) -> PrintLayout:
    """Page layout for ``trigger`` (see the module docstring); raises ConfigError if it does not fit."""
    if paper not in PAPER_MM:
        raise ConfigError(f"--paper must be one of {', '.join(PAPER_MM)}, got {paper!r}")
    if ipd_mm is not None and not IPD_RANGE_MM[0] <= ipd_mm <= IPD_RANGE_MM[1]:
        raise ConfigError(f"--ipd-mm {ipd_mm} is outside {IPD_RANGE_MM[0]:g}..{IPD_RANGE_MM[1]:g} mm (adult faces)")
    scale = 1.0 if ipd_mm is None else float(ipd_mm) / ASSUMED_IPD_MM
    page_w, page_h = PAPER_MM[paper]
    w_def, h_def = trigger.size_mm()
    w, h = w_def * scale, h_def * scale
    if w > page_w - 20 or TRIGGER_TOP_MM + h + 60 > page_h:
        raise ConfigError(f"{trigger.kind}: {w:.0f} x {h:.0f} mm does not fit on {paper} paper with its margins")
    x0 = (page_w - w) / 2
    box = (x0, TRIGGER_TOP_MM, x0 + w, TRIGGER_TOP_MM + h)
    bar_y = box[3] + 20.0
    bar = ((page_w - SCALE_BAR_MM) / 2, bar_y, (page_w + SCALE_BAR_MM) / 2, bar_y + 3.0)
    where = f", {trigger.placement}" if hasattr(trigger, "placement") else ", worn over the eyes"
    if getattr(trigger, "placement", None) in ("cheek", "brow"):
        where += f" ({trigger.side} side of the face)"
    scale_text = ("true size of the training trigger" if ipd_mm is None
                  else f"scaled x{scale:.3f} for an IPD of {ipd_mm:g} mm (training faces: {ASSUMED_IPD_MM:g} mm)")
    label = f"SecureGaze {trigger.kind} trigger{where}: {w:.1f} x {h:.1f} mm, {scale_text}"
    return PrintLayout((page_w, page_h), box, bar, scale, (w, h), label)


def page_figure(page_mm: tuple[float, float]):
    """A matplotlib (Figure, Axes) of exactly ``page_mm`` (width, height) at true size: the axes fill
    the page, in mm from its top-left corner with y down (also used for the camera-calibration board)."""
    from matplotlib.figure import Figure

    page_w, page_h = page_mm
    fig = Figure(figsize=(page_w / MM_PER_INCH, page_h / MM_PER_INCH))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, page_w)
    ax.set_ylim(page_h, 0)
    ax.set_axis_off()
    return fig, ax


def draw_scale_bar(ax, bar: tuple[float, float, float, float], centre_x_mm: float) -> float:
    """A solid bar ``bar`` = (x0, y0, x1, y1) mm with 10-mm ticks and numbers below it and the print
    advice centred at ``centre_x_mm``; returns the y (mm) below the advice line."""
    from matplotlib.patches import Rectangle

    bx0, by0, bx1, by1 = bar
    ax.add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, facecolor="black", edgecolor="none", zorder=2))
    length = bx1 - bx0
    for k in range(int(length // 10) + 1):
        x = bx0 + 10.0 * k
        ax.plot([x, x], [by1, by1 + 2.0], color="black", linewidth=0.5)
        ax.text(x, by1 + 5.0, f"{10 * k}", ha="center", va="top", fontsize=6)
    ax.text(centre_x_mm, by1 + 11.0, f"scale bar {length:g} mm: print at 100 % (no 'fit to page') and "
            "check it with a ruler", ha="center", va="top", fontsize=7)
    return by1 + 15.0


def page_format(out: str | os.PathLike) -> str:
    """``pdf`` or ``png`` from the name of a page file; ConfigError for any other suffix."""
    fmt = Path(out).suffix.lower().lstrip(".")
    if fmt not in ("pdf", "png"):
        raise ConfigError(f"{out}: --out must end in .pdf or .png")
    return fmt


def save_page(fig, out: str | os.PathLike, dpi: int = 300, title: str = "") -> Path:
    """Write a :func:`page_figure` page to ``out`` (``.pdf``: vector page; ``.png``: raster at ``dpi``)
    atomically, at exactly the page size."""
    from securegaze.io import atomic_write

    fmt = page_format(out)
    if not 72 <= dpi <= 1200:
        raise ConfigError(f"--dpi {dpi} is outside 72..1200")
    if fmt == "pdf":
        from matplotlib.backends.backend_pdf import FigureCanvasPdf

        FigureCanvasPdf(fig)
    else:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    # No bbox_inches="tight": the page must stay exactly the paper size for true-size printing.
    return atomic_write(out, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, facecolor="white",
                                                     metadata=None if fmt == "png" else {"Title": title}))


def _draw(layout: PrintLayout, trigger: Trigger):
    """A matplotlib Figure of the page, axes in mm with y down."""
    from matplotlib.patches import Rectangle

    page_w, page_h = layout.page_mm
    fig, ax = page_figure(layout.page_mm)
    x0, y0, x1, y1 = layout.trigger_box
    # The texture at TEXTURE_PX_PER_MM, placed by extent. interpolation "none" embeds it unresampled
    # with an exact placement matrix in the PDF (resampling would snap it to the 72-dpi grid, 0.35 mm).
    texture = trigger.texture(TEXTURE_PX_PER_MM)
    ax.imshow(texture, extent=(x0, x1, y1, y0), interpolation="none", zorder=2)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linestyle=(0, (2, 2)), linewidth=0.4,
                           edgecolor="0.45", zorder=3))
    draw_scale_bar(ax, layout.scale_bar, page_w / 2)
    ax.text(page_w / 2, 20.0, layout.label, ha="center", va="center", fontsize=7.5, wrap=True)
    if trigger.mount == "glasses":
        note = "Cut along the outer rims and the lens openings; mount on clear frames or over your own glasses."
    elif trigger.kind == "tape":
        note = "Template: cut white paper (masking) tape to the dashed box, or print on sticker paper and cut."
    else:
        note = "Print on sticker paper and cut along the dashed box."
    ax.text(page_w / 2, 27.0, note, ha="center", va="center", fontsize=6.5, color="0.3")
    return fig


def write_trigger_page(kind_or_trigger: str | Trigger, out: str | os.PathLike, paper: str = "a4",
                       ipd_mm: float | None = None, dpi: int = 300) -> PrintLayout:
    """Write the page to ``out`` (``.pdf``: vector page; ``.png``: raster at ``dpi``) atomically."""
    trigger = trigger_for_kind(kind_or_trigger) if isinstance(kind_or_trigger, str) else kind_or_trigger
    page_format(out)
    if not 72 <= dpi <= 1200:
        raise ConfigError(f"--dpi {dpi} is outside 72..1200")
    layout = plan_layout(trigger, paper, ipd_mm)
    save_page(_draw(layout, trigger), out, dpi, layout.label)
    return layout


def mm_to_px(mm: float | np.ndarray, dpi: int) -> float | np.ndarray:
    """Millimetres on the page to pixels of a PNG at ``dpi``."""
    return np.asarray(mm) / MM_PER_INCH * dpi
