"""Memory layout of a scan: images, model and generator stored channels last when the model allows it.

A scan is thousands of small convolutions on one core each; oneDNN, which runs them on a CPU, works in
channels-last (NHWC) order and converts the usual NCHW tensors to it and back at every layer. Stored
channels last from the start, a scan step of a 64-px model takes about a quarter to a third less time
(measured in docs/detection_cross_family.md, "Scanner 4.1"). The arithmetic is the same; only the
order of floating-point sums inside the kernels changes, as it does between CPUs or thread counts.

A model may not work channels last: an ONNX graph converted to torch can reshape a feature map with a
``view`` that needs the NCHW order, or give other numbers. :func:`scan_layout` therefore runs the
model both ways on a few clean images first and keeps the usual layout unless channels last runs
and gives the same outputs; afterwards every parameter and buffer gets its own layout back.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

#: Clean images of the trial forward, and how close its two outputs must be (relative to their size).
TRIAL_IMAGES = 4
TRIAL_TOLERANCE = 1e-4


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout a batch of images (N, C, H, W) is stored in: channels last or the usual NCHW. A scan's
    generator takes the layout of its images."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The model's 4-d parameters and buffers by name (a shared tensor under each of its names)."""
    named = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    return [(name, t) for name, t in named if t.dim() == 4]


def _layouts(model: nn.Module) -> dict[str, torch.memory_format]:
    """Each 4-d parameter's and buffer's own layout, to give back after the scan."""
    return {name: memory_format(t) for name, t in _tensors(model)}


def _relayout(model: nn.Module, layouts: dict[str, torch.memory_format] | torch.memory_format) -> None:
    """Store every 4-d parameter and buffer in ``layouts`` (one layout for all, or one per name)."""
    with torch.no_grad():
        for name, t in _tensors(model):
            wanted = layouts if isinstance(layouts, torch.memory_format) else layouts.get(name, torch.contiguous_format)
            if memory_format(t) != wanted:
                t.data = t.data.contiguous(memory_format=wanted)


def channels_last_works(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``model`` (in eval mode) runs on channels-last images and parameters and gives the same
    outputs as in the usual layout on the first :data:`TRIAL_IMAGES` of ``x``; the model is left in
    the layouts it came in."""
    if x.dim() != 4 or x.shape[1] < 2:
        return False
    layouts = _layouts(model)
    trial = x[:TRIAL_IMAGES].contiguous()
    try:
        with torch.no_grad():
            usual = model(trial)
            _relayout(model, torch.channels_last)
            last = model(trial.contiguous(memory_format=torch.channels_last))
        return bool(usual.shape == last.shape and torch.isfinite(last).all()
                    and (last - usual).abs().max() <= TRIAL_TOLERANCE * (1.0 + usual.abs().max()))
    except (RuntimeError, ValueError, TypeError):
        return False
    finally:
        _relayout(model, layouts)


@contextmanager
def scan_layout(model: nn.Module, x: torch.Tensor):
    """Within: ``model`` and the yielded images stored channels last when :func:`channels_last_works`,
    else ``x`` as it is; on exit every parameter and buffer of ``model`` gets its own layout back."""
    if not channels_last_works(model, x):
        yield x
        return
    layouts = _layouts(model)
    _relayout(model, torch.channels_last)
    try:
        yield x.contiguous(memory_format=torch.channels_last)
    finally:
        _relayout(model, layouts)
