"""Inner layers of F for the baselines that look inside it (ABS stimulates their channels, FeatureRE masks one).

A gaze model here is anything with ``features`` and ``head`` (a network built in
:mod:`securegaze.models` or an ONNX graph converted back to PyTorch), so layers are found by what runs,
not by name: :func:`activation_sites` runs ``model.features`` once on a few images and lists, in the
order they ran, the calls of activation modules (ReLU, Hardswish, ...) whose output is a feature map
(N, C, H, W) with more than one pixel. A module called twice in one forward pass (torchvision's
ResNet blocks reuse their ReLU) gives two sites, told apart by ``occurrence``.

:class:`SiteTap` hooks one site: it records the activation's input (the pre-activation) and output on
every forward pass, and can replace the output (a stimulated channel, a masked mix of features). Its
replacement may change the batch size (one clean batch, many stimulated copies), which saves running
the layers before the site again; :meth:`SiteTap.expand_outputs` tries that once and falls back to
repeating the input when the network cannot take it (a skip connection around the site).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from securegaze.errors import ModelFormatError

__all__ = ["ACTIVATION_TYPES", "Site", "SiteTap", "activation_sites", "expandable"]

#: Modules whose output counts as a layer's "neurons" (ABS stimulates their channels).
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.SiLU, nn.GELU, nn.ELU, nn.Mish, nn.Hardtanh, nn.PReLU,
)


@dataclass(frozen=True)
class Site:
    """One call of an activation module in F: ``module_name`` (as in ``model.named_modules()``), its
    ``occurrence`` within one forward pass (0 for the first call), and the per-image output ``shape``
    (C, H, W). ``index`` is its place among the sites, 0 nearest the input."""

    index: int
    module_name: str
    occurrence: int
    shape: tuple[int, int, int]

    @property
    def label(self) -> str:
        return f"{self.module_name}#{self.occurrence}" if self.occurrence else self.module_name


def activation_sites(model, x: torch.Tensor) -> list[Site]:
    """The activation calls of ``model.features`` on ``x`` whose output is (N, C, H, W) with H*W > 1.

    A model without any (a network of linear layers only) is a :class:`ModelFormatError` naming what
    was expected.
    """
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    calls: list[tuple[str, int, tuple[int, ...]]] = []
    seen: dict[str, int] = {}

    def record(module, _inputs, output):
        name = names[id(module)]
        calls.append((name, seen.get(name, 0), tuple(output.shape[1:])))
        seen[name] = seen.get(name, 0) + 1

    handles = [m.register_forward_hook(record) for m in modules.values() if isinstance(m, ACTIVATION_TYPES)]
    try:
        with torch.no_grad():
            model.features(x)
    finally:
        for handle in handles:
            handle.remove()
    maps = [(n, k, s) for n, k, s in calls if len(s) == 3 and s[1] * s[2] > 1]
    if not maps:
        raise ModelFormatError("the model's F has no activation layer with a feature map (N, C, H, W); "
                               "this method needs a convolutional F")
    return [Site(i, n, k, (int(s[0]), int(s[1]), int(s[2]))) for i, (n, k, s) in enumerate(maps)]


class SiteTap:
    """A forward hook on one :class:`Site`, used as a context manager (the hook is removed on exit).

    ``replace``: None, or a function of the site's output returning what the rest of F sees instead
    (it may change the batch size). After each :meth:`features` call, ``pre`` and ``post`` hold the
    site's input and (possibly replaced) output; ``keep_pre`` clones the input before the module runs,
    because an in-place ReLU overwrites it.
    """

    def __init__(self, model, site: Site, replace: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 keep_pre: bool = False) -> None:
        self.model, self.site, self.replace, self.keep_pre = model, site, replace, keep_pre
        self.module = dict(model.named_modules())[site.module_name]
        self.calls = 0
        self.pre: torch.Tensor | None = None
        self.post: torch.Tensor | None = None
        self._handles: list = []
        self._expandable: bool | None = None

    def __enter__(self) -> SiteTap:
        if self.keep_pre:
            self._handles.append(self.module.register_forward_pre_hook(self._before))
        self._handles.append(self.module.register_forward_hook(self._after))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _before(self, _module, inputs):
        if self.calls == self.site.occurrence:
            self.pre = inputs[0].clone()

    def _after(self, _module, _inputs, output):
        hit = self.calls == self.site.occurrence
        self.calls += 1
        if not hit:
            return None
        if self.replace is not None:
            output = self.replace(output)
        self.post = output
        return output

    @property
    def expands(self) -> bool | None:
        """Whether :meth:`expand_outputs` lets the batch grow at the site (None until first tried)."""
        return self._expandable

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``model.features(x)`` with the hook active (the call count restarts for this pass)."""
        self.calls = 0
        return self.model.features(x)

    def expand_outputs(self, x: torch.Tensor, copies: Callable[[torch.Tensor], torch.Tensor],
                       count: int) -> torch.Tensor:
        """Gaze of ``count`` edited copies of each image of ``x``, (count * N, 2), without gradients.

        ``copies`` maps the site's clean output (N, C, H, W) to (count * N, C, H, W). The layers before
        the site run once when the network lets the batch grow at the site (checked on the first call
        with N > 1: the output must have count * N rows and no error); otherwise the input is repeated
        ``count`` times and ``copies`` applied to the repeated site output's first N rows.
        """
        n = len(x)
        saved = self.replace
        try:
            with torch.no_grad():
                # One image could broadcast against a skip connection's batch of one and hide the mismatch.
                if self._expandable is not False and n > 1:
                    self.replace = copies
                    try:
                        gaze = self.model.head(self.features(x))
                        if gaze.shape[0] == count * n:
                            self._expandable = True
                            return gaze
                    except RuntimeError:
                        if self._expandable:
                            raise
                    self._expandable = False
                self.replace = lambda out: copies(out[:n])
                return self.model.head(self.features(x.repeat(count, 1, 1, 1)))
        finally:
            self.replace = saved


def expandable(model, site: Site, x: torch.Tensor) -> bool:
    """Whether the network lets the batch grow at ``site`` (no skip connection runs around it), tried on
    two copies of the first image of ``x``."""
    with SiteTap(model, site) as tap:
        tap.expand_outputs(x[:1].repeat(2, 1, 1, 1), lambda out: out.repeat(2, 1, 1, 1), 2)
        return bool(tap.expands)
