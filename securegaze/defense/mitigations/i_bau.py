"""Implicit Backdoor Adversarial Unlearning, I-BAU (Zeng et al., ICLR 2022), adapted to gaze regression.

I-BAU poses unlearning as a minimax problem over one *universal* perturbation delta shared by all images:

    min over theta  max over ||delta||_2 <= C  of  (1/n) sum_i L(f_theta(x_i + delta), y_i)

and solves it in rounds. Each round (1) finds delta by gradient ascent on the clean images, starting from
0, with a small L2 penalty, then projects it onto the ball; (2) updates the weights theta with the
*implicit hypergradient* of the outer loss, which accounts for delta's dependence on theta: with the
inner problem's fixed-point map Phi(delta, theta) = delta - eta * grad_delta L_inner(delta, theta),

    dL/dtheta = dL_outer/dtheta + (dPhi/dtheta)^T v,   v = (dPhi/ddelta)^T v + dL_outer/ddelta,

where v is approximated by ``fixed_point_steps`` iterations of that equation from v = 0 (the
**fixed-point** approximation of the paper's public code, a truncated Neumann series; not conjugate
gradient). Here it is written with ``torch.autograd.grad`` (second-order products through the model).

The adaptation:

* **loss**: L1 on (pitch, yaw) in **degrees**. The inner ascent step (10), the L2 penalty (0.001) and
  the fixed-point step (0.1) were tuned on a cross-entropy of a few units; a gaze loss in degrees has that
  order (in radians it would be 57x smaller). The inner problem maximises the deviation from the current
  model's own predictions on the clean images, as the code does with its own argmax labels; the outer
  loss uses the labels (the original model's predictions unless true labels are given);
* **the ball**: C = 10 for 32x32x3 images in [0, 1] in the public code; at other sizes the same root
  mean square per pixel value (``radius_rms`` = 10 / sqrt(3072)), so C = 20 at 64 px. Perturbed images
  are clipped to [0, 1], as in the public notebook;
* **how many images carry delta in the outer loss**: the public code perturbs 1 % of each batch (one
  image of 100), the paper's objective all of them. ``perturbed_share`` sets it (at least one image per
  batch); the default is the code's 0.01. With 1.0 the universal perturbation, which moves a gaze
  regressor's answers by tens of degrees, is unlearnt at the price of the clean error (tiny test model:
  ASR 99 % -> 0 % but clean error 12.4 -> 25.4 deg; with 0.01: 99 % -> 6 %, 12.4 -> 13.2 deg);
* **a random start**: the inner ascent starts from a random delta of a tenth of the radius, not from 0.
  At 0 the deviation from the model's own gaze is exactly 0 and the L1 loss has no gradient (the paper's
  cross-entropy against argmax labels is not flat there);
* eval mode throughout, as the public notebook.

Defaults of the public code (github.com/YiZeng623/I-BAU, defense.py and the CIFAR notebook): 5 rounds,
K = 5 fixed-point steps, Adam at 0.001 for theta, batches of 100 in a fixed order, SGD at 10 for delta
(one step per batch, one pass), penalty 0.001 ||delta||^2, fixed-point step 0.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from securegaze.defense.mitigations.base import MitigationMethod, MitigationSettings, gaze_l1, predict_batched
from securegaze.errors import ModelFormatError
from securegaze.validation import check_int, check_number

#: I-BAU's L2 radius, 10 for 32x32x3 images in [0, 1], as a root mean square per pixel value.
RADIUS_RMS = 10.0 / math.sqrt(32 * 32 * 3)
#: The inner ascent starts from a random delta of this share of the radius (see ``_universal_perturbation``).
START_SHARE = 0.1


@dataclass(frozen=True)
class IBAUSettings(MitigationSettings):
    """``rounds``: inner maximisation + one pass of outer updates, this many times; ``lr``: Adam step of
    the weights; ``radius_rms``: the L2 ball of delta as a root mean square per pixel value; ``inner_lr``:
    SGD step of delta (one per batch); ``penalty``: weight of ||delta||^2 in the inner loss;
    ``fixed_point_steps``, ``fixed_point_lr``: K and eta of the hypergradient; ``perturbed_share``: share
    of each batch that carries delta in the outer loss."""

    batch_size: int = 100
    rounds: int = 5
    lr: float = 0.001
    radius_rms: float = round(RADIUS_RMS, 5)
    inner_lr: float = 10.0
    penalty: float = 0.001
    fixed_point_steps: int = 5
    fixed_point_lr: float = 0.1
    perturbed_share: float = 0.01

    def validate(self, who: str) -> None:
        super().validate(who)
        check_int(who, "rounds", self.rounds, 1, 10_000)
        check_number(who, "lr", self.lr, 0.0, 1.0, low_open=True)
        check_number(who, "radius_rms", self.radius_rms, 0.0, 1.0, low_open=True)
        check_number(who, "inner_lr", self.inner_lr, 0.0, 1e6, low_open=True)
        check_number(who, "penalty", self.penalty, 0.0, 1e6)
        check_int(who, "fixed_point_steps", self.fixed_point_steps, 1, 1000)
        check_number(who, "fixed_point_lr", self.fixed_point_lr, 0.0, 1e3, low_open=True)
        check_number(who, "perturbed_share", self.perturbed_share, 0.0, 1.0, low_open=True)


class IBAU(MitigationMethod):
    name = "i_bau"
    settings_class = IBAUSettings
    source = ("Zeng et al., Adversarial Unlearning of Backdoors via Implicit Hypergradient, ICLR 2022; defaults of "
              "github.com/YiZeng623/I-BAU")

    def run(self, tuned, x, targets, progress):
        s = self.config
        params = [p for p in tuned.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=s.lr)
        radius = s.radius_rms * math.sqrt(x[0].numel())
        batches = [slice(i, min(i + s.batch_size, len(x))) for i in range(0, len(x), s.batch_size)]
        rng = np.random.default_rng([s.seed, 0x1BA0])
        generator = torch.Generator().manual_seed(s.seed)
        history = []
        total, step = s.rounds * len(batches), 0
        for round_no in range(1, s.rounds + 1):
            delta = self._universal_perturbation(tuned, x, batches, radius, generator)
            gain = self._deviation(tuned, x, delta) - self._deviation(tuned, x, torch.zeros_like(delta))
            losses = []
            for batch in batches:
                xb, yb = x[batch], targets[batch]
                count = max(1, int(round(s.perturbed_share * len(xb))))
                chosen = torch.as_tensor(np.sort(rng.choice(len(xb), count, replace=False)), device=x.device)
                outer, grads = self._hypergradient(tuned, params, delta, xb, yb, chosen)
                if not math.isfinite(outer) or not all(torch.isfinite(g).all() for g in grads):
                    raise ModelFormatError(f"{self.name}: the hypergradient is not finite in round {round_no}; "
                                           "lower lr or fixed_point_lr")
                optimizer.zero_grad(set_to_none=True)
                for p, g in zip(params, grads, strict=True):
                    p.grad = g
                optimizer.step()
                losses.append(outer)
                step += 1
                self.report_progress(progress, "unlearn", step, total, loss_deg=outer)
            history.append({"round": round_no, "delta_norm": float(delta.norm()), "radius": radius,
                            "deviation_gain_deg": gain, "outer_loss_deg": float(np.mean(losses))})
        return {"rounds": history, "approximation": f"fixed point, K={s.fixed_point_steps}"}

    def _deviation(self, model, x, delta) -> float:
        """Mean L1 deviation (degrees) of ``model`` on ``x + delta`` (clipped) from its own clean gaze."""
        clean = predict_batched(model, x, self.config.batch_size)
        return float(gaze_l1(predict_batched(model, (x + delta).clamp(0, 1), self.config.batch_size), clean,
                             degrees=True))

    def _universal_perturbation(self, model, x, batches, radius: float, generator) -> torch.Tensor:
        """One pass of SGD ascent on the deviation from the model's own gaze, then the projection onto
        the L2 ball of ``radius``; (1, 3, S, S), detached."""
        s = self.config
        # A random start: at delta = 0 the deviation from the model's own gaze is exactly 0 and so is the
        # gradient of its L1 (a cross-entropy against argmax labels, the paper's loss, is not flat there).
        start = torch.randn(x[:1].shape, generator=generator).to(x.device)
        delta = (start * (START_SHARE * radius / float(start.norm()))).requires_grad_(True)
        inner = torch.optim.SGD([delta], lr=s.inner_lr)
        for batch in batches:
            xb = x[batch]
            with torch.no_grad():
                own = model(xb)
            loss = -gaze_l1(model((xb + delta).clamp(0, 1)), own, degrees=True) + s.penalty * delta.pow(2).sum()
            inner.zero_grad(set_to_none=True)
            (grad,) = torch.autograd.grad(loss, [delta])
            delta.grad = grad
            inner.step()
        with torch.no_grad():
            norm = float(delta.norm())
            return (delta * min(1.0, radius / norm) if norm > 0 else delta).detach()

    def _hypergradient(self, model, params, delta, xb, yb, chosen) -> tuple[float, list[torch.Tensor]]:
        """The outer loss (degrees) and its implicit hypergradient for every parameter (see the module doc)."""
        s = self.config
        delta = delta.detach().requires_grad_(True)
        patch = torch.zeros_like(xb)
        patch[chosen] = 1.0
        outer = gaze_l1(model((xb + patch * delta).clamp(0, 1)), yb, degrees=True)
        g_delta, *g_theta = torch.autograd.grad(outer, [delta, *params], allow_unused=True)
        g_delta = torch.zeros_like(delta) if g_delta is None else g_delta
        inner = -gaze_l1(model((xb + delta).clamp(0, 1)), yb, degrees=True) + s.penalty * delta.pow(2).sum()
        (g_inner,) = torch.autograd.grad(inner, [delta], create_graph=True)
        mapped = delta - s.fixed_point_lr * g_inner
        v = torch.zeros_like(delta)
        for _ in range(s.fixed_point_steps):
            previous = v
            (jv,) = torch.autograd.grad(mapped, [delta], grad_outputs=v, retain_graph=True)
            v = jv + g_delta
            if float((v - previous).norm()) < 1e-10:
                break
        hyper = torch.autograd.grad(mapped, params, grad_outputs=v, allow_unused=True)
        grads = [(torch.zeros_like(p) if a is None else a) + (0 if b is None else b)
                 for p, a, b in zip(params, g_theta, hyper, strict=True)]
        return float(outer.detach()), [g.detach() for g in grads]
