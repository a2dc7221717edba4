"""Adversarial Neuron Pruning (Wu and Wang, NeurIPS 2021), adapted to gaze regression.

The paper's observation: a backdoored network is sensitive to small perturbations of its neurons; the
neurons that carry the backdoor are the ones whose perturbation makes the clean loss explode. ANP gives
every neuron a multiplicative mask m in [0, 1] (1: kept) and learns the masks against an adversary that
perturbs each neuron's scale and shift by up to eps (relative):

    min over m  of  alpha * L(m) + (1 - alpha) * max over |delta|, |xi| <= eps  of  L(m + delta, 1 + xi)

on the clean images, then prunes every neuron whose mask ended at or below a threshold. There is no
fine-tuning afterwards.

The adaptation:

* **neurons**: as in the paper's code, the channels of every batch norm (its scale gamma is multiplied by
  ``m + delta``, its shift beta by ``1 + xi``). **A model without batch norm** (an ONNX bundle: its export
  folded each batch norm into the conv before it) has the masks on the output channels of every conv
  layer instead, in the same form: the conv's filter response is multiplied by ``m + delta`` and its bias
  by ``1 + xi``. ``details["neurons"]`` says which (``"batchnorm"`` or ``"conv"``). Pruning sets the
  scale to 0 (gamma, or the filter) and keeps the shift, as the paper's pruning does;
* **loss**: L1 on (pitch, yaw) in **degrees** (``loss_unit``), against the labels (the original model's own
  predictions unless true labels are given). The mask step size 0.2 was tuned for a cross-entropy of a few
  units; a gaze loss in degrees has that order, in radians it is 57x smaller (tiny BadNets model, seed
  shift 0, eval mode: 1 neuron pruned and ASR unchanged in radians, 2 in degrees);
* **batch statistics while the masks learn** (``batchnorm_mode="train"``), as the paper's code does: the
  batch norms normalise each batch with its own statistics; their running statistics are restored
  afterwards and the pruned model runs in eval mode. On the tiny BadNets test model (seed shift 0) this is
  what made ANP work: ASR@5 deg 99 % -> 13 % (2 of 56 neurons pruned), against 99 % -> 98 % with the running
  statistics fixed (``"eval"``, the convention of the other methods); a model without batch norm has
  nothing to switch;
* the adversary's step is projected back onto [-eps, eps] (the paper's constraint; its code leaves a
  perturbation of up to 2 eps after the single step from a random start).

Defaults from the public code (csdongxian/ANP_backdoor, optimize_mask_cifar.py and the paper): eps 0.4,
one adversarial step of size eps, alpha 0.2, masks by SGD at 0.2 with momentum 0.9, 2000 iterations of
128 images drawn with replacement, pruning threshold 0.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from securegaze.defense.mitigations.base import MitigationMethod, MitigationSettings, gaze_l1
from securegaze.errors import ModelFormatError
from securegaze.validation import check_choice, check_int, check_number


@dataclass(frozen=True)
class ANPSettings(MitigationSettings):
    """``eps``: the adversary's relative perturbation of each neuron's scale and shift; ``pgd_steps``:
    its sign-gradient steps (size eps / steps) from a uniform random start; ``alpha``: weight of the
    unperturbed loss; ``mask_lr``: SGD step size of the masks (momentum 0.9); ``iterations``: mask
    updates, each on ``batch_size`` clean images drawn with replacement; ``prune_threshold``: neurons
    whose mask ends at or below it are pruned; ``loss_unit``: ``"deg"`` or ``"rad"``; ``batchnorm_mode``:
    ``"train"`` (batch statistics while the masks learn, the paper's code) or ``"eval"``."""

    batch_size: int = 128
    eps: float = 0.4
    pgd_steps: int = 1
    alpha: float = 0.2
    mask_lr: float = 0.2
    iterations: int = 2000
    prune_threshold: float = 0.2
    loss_unit: str = "deg"
    batchnorm_mode: str = "train"

    def validate(self, who: str) -> None:
        super().validate(who)
        check_number(who, "eps", self.eps, 0.0, 1.0)
        check_int(who, "pgd_steps", self.pgd_steps, 1, 1000)
        check_number(who, "alpha", self.alpha, 0.0, 1.0)
        check_number(who, "mask_lr", self.mask_lr, 0.0, 100.0, low_open=True)
        check_int(who, "iterations", self.iterations, 1, 10_000_000)
        check_number(who, "prune_threshold", self.prune_threshold, 0.0, 1.0, high_open=True)
        check_choice(who, "loss_unit", self.loss_unit, ("deg", "rad"))
        check_choice(who, "batchnorm_mode", self.batchnorm_mode, ("eval", "train"))


class NeuronMask:
    """The mask and the adversary's perturbation of one layer's channels, applied by a forward hook.

    The layer's output is ``scale * (out - offset) + shift * offset``, where ``offset`` is the batch
    norm's beta or the conv's bias (zero without one), ``scale = m (+ delta)`` and ``shift = 1 (+ xi)``.
    """

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name, self.module = name, module
        self.channels = int(module.num_features if hasattr(module, "num_features") else module.out_channels)
        device = module.weight.device
        offset = getattr(module, "bias", None)
        self.offset = offset.detach() if offset is not None else torch.zeros(self.channels, device=device)
        self.mask = torch.ones(self.channels, device=device, requires_grad=True)
        self.delta = torch.zeros(self.channels, device=device, requires_grad=True)
        self.xi = torch.zeros(self.channels, device=device, requires_grad=True)
        self.perturbed = False
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, output):
        shape = (1, self.channels) + (1,) * (output.dim() - 2)
        scale = self.mask + self.delta if self.perturbed else self.mask
        shift = 1.0 + self.xi if self.perturbed else torch.ones_like(self.xi)
        offset = self.offset.view(shape)
        return scale.view(shape) * (output - offset) + shift.view(shape) * offset


def mask_layers(model: nn.Module, who: str) -> tuple[str, list[tuple[str, nn.Module]]]:
    """Where the masks go: every affine batch norm, or on a model without one every conv layer."""
    norms = [(n, m) for n, m in model.named_modules()
             if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine]
    if norms:
        return "batchnorm", norms
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ModelFormatError(f"{who}: the model has neither batch norms nor conv layers to put neuron masks on")
    return "conv", convs


class ANP(MitigationMethod):
    name = "anp"
    settings_class = ANPSettings
    source = ("Wu and Wang, Adversarial Neuron Pruning Purifies Backdoored Deep Models, NeurIPS 2021; defaults "
              "of github.com/csdongxian/ANP_backdoor")

    def run(self, tuned, x, targets, progress):
        s = self.config
        for p in tuned.parameters():
            p.requires_grad_(False)
        kind, layers = mask_layers(tuned, self.name)
        masks = [NeuronMask(n, m) for n, m in layers]
        norms = [m for m in tuned.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
        kept = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
        if s.batchnorm_mode == "train":  # the paper's code: batch statistics while the masks learn
            for m in norms:
                m.train()
        try:
            losses = self._optimise(tuned, masks, x, targets, progress)
        finally:
            for m in masks:
                m.handle.remove()
            for m, state in zip(norms, kept, strict=True):
                m.load_state_dict(state)
                m.eval()
        values = torch.cat([m.mask.detach() for m in masks]).cpu()
        pruned = {}
        with torch.no_grad():
            for m in masks:
                channels = torch.nonzero(m.mask.detach() <= s.prune_threshold).flatten()
                if len(channels):
                    m.module.weight[channels] = 0.0
                    pruned[m.name] = channels.tolist()
        count = sum(len(c) for c in pruned.values())
        return {"neurons": kind, "layers": len(masks), "neuron_count": int(len(values)), "pruned": count,
                "pruned_share": count / max(len(values), 1), "pruned_channels": pruned,
                "mask_quantiles": [float(q) for q in np.quantile(values.numpy(), [0.0, 0.1, 0.5, 0.9, 1.0])],
                **losses}

    def _optimise(self, model, masks: list[NeuronMask], x, targets, progress) -> dict[str, float]:
        s = self.config
        generator = torch.Generator().manual_seed(s.seed)
        optimizer = torch.optim.SGD([m.mask for m in masks], lr=s.mask_lr, momentum=0.9)
        noise = [t for m in masks for t in (m.delta, m.xi)]
        step_size = s.eps / s.pgd_steps
        degrees = s.loss_unit == "deg"
        batch = min(s.batch_size, len(x))
        nat = rob = float("nan")
        for it in range(1, s.iterations + 1):
            idx = torch.randint(0, len(x), (batch,), generator=generator).to(x.device)
            xb, yb = x[idx], targets[idx]
            for m in masks:
                m.perturbed = True
            with torch.no_grad():
                for t in noise:
                    t.copy_(torch.rand(t.shape, generator=generator).to(t.device) * 2 * s.eps - s.eps)
            if s.eps > 0:
                for _ in range(s.pgd_steps):
                    grads = torch.autograd.grad(gaze_l1(model(xb), yb, degrees=degrees), noise)
                    with torch.no_grad():
                        for t, g in zip(noise, grads, strict=True):
                            t.add_(step_size * torch.sign(g)).clamp_(-s.eps, s.eps)
                loss_rob = gaze_l1(model(xb), yb, degrees=degrees)
            else:
                loss_rob = torch.zeros(())
            for m in masks:
                m.perturbed = False
            loss_nat = gaze_l1(model(xb), yb, degrees=degrees)
            loss = s.alpha * loss_nat + (1 - s.alpha) * loss_rob
            if not torch.isfinite(loss):
                raise ModelFormatError(f"{self.name}: the mask optimisation diverged at iteration {it}; lower mask_lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for m in masks:
                    m.mask.clamp_(0.0, 1.0)
            nat, rob = loss_nat.item(), float(loss_rob.detach())
            self.report_progress(progress, "masks", it, s.iterations, natural_deg=nat, robust_deg=rob)
        return {"last_natural_loss_deg": nat, "last_robust_loss_deg": rob}
