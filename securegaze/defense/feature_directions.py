"""The backdoor's feature directions, and a gaze head that cannot see them (mitigation version 5).

A reversed trigger and the real one often reach the target gaze by different routes in the image (a
cheek patch where the real trigger is a pair of glasses), and unlearning the reversed route then
leaves the real one open. In the features the routes meet: on the 32-px zoo of docs/baselines.md the
mean feature shift that a reversed edit causes points the same way as the real trigger's (cosine
0.92-1.00 on the six models version 4 left with their backdoor), because the backdoor lives in the
features that feed the head, whatever the route in the image. So the unlearning also removes those
directions from what the head reads:

* :func:`backdoor_directions`: the mean feature shift of each reversed edit over the clean images,
  orthonormalised (QR; a shift that adds less than ``RANK_TOLERANCE`` of the largest to the span is
  dropped);
* :func:`blind_head`: the head's linear layers then read the features with those directions replaced
  by their clean mean (``W' = W (I - U U^T)``, ``b' = b + W U U^T mu``), folded into the layers' own
  weights, so the model keeps its architecture and exports as before;
* :func:`reproject`: after each fine-tuning step the head's weights are projected again, so the
  fine-tuning that recovers the clean error (the rest of the features must carry the gaze those
  directions carried) cannot bring the directions back.

The head must read the features through its linear layers directly (every model of this project,
and a converted ONNX whose head is the last MatMul/Gemm after the feature tensor); :func:`blind_head`
checks that on the clean features and refuses otherwise.
"""

from __future__ import annotations

import torch
from torch import nn

#: A further direction is kept only while it adds this share of the largest shift's length to the span.
RANK_TOLERANCE = 0.05
#: The folded head must reproduce "head of the projected features" to this many radians.
FOLD_TOLERANCE = 1e-4


def _feature_batches(model, x: torch.Tensor, edit=None, batch_size: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.features(edit(x[i:i + batch_size]) if edit else x[i:i + batch_size])
                          for i in range(0, len(x), batch_size)])


def backdoor_directions(model, x: torch.Tensor, generators) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, mu): orthonormal columns (D, k) spanning the mean feature shifts of ``generators`` on the clean
    images ``x`` (N, 3, S, S), and the clean mean feature (D,)."""
    mu = _feature_batches(model, x).mean(0)
    columns = torch.stack([_feature_batches(model, x, g).mean(0) - mu for g in generators], 1).double()
    q, r = torch.linalg.qr(columns)
    keep = r.diagonal().abs() > RANK_TOLERANCE * columns.norm(dim=0).max()
    return q[:, keep].to(mu.dtype), mu


def linears_of(model) -> list[nn.Linear]:
    """The model's head linear layers (``head_linears()``), or [] for a model that does not expose them."""
    linears = getattr(model, "head_linears", None)
    return list(linears()) if callable(linears) else []


def blind_head(model, u: torch.Tensor, mu: torch.Tensor, x: torch.Tensor) -> bool:
    """Fold "replace the U-components of the features by mu's" into ``model``'s head, in place. Returns
    False (and leaves the model as it was) when the head does not read the features through its linear
    layers alone, checked on the clean images ``x``."""
    linears = linears_of(model)
    if not linears or u.shape[1] == 0:
        return False
    z = _feature_batches(model, x[:256])
    projector = u @ u.T
    with torch.no_grad():
        wanted = model.head(z - (z - mu) @ projector)
        saved = [(lin.weight.clone(), None if lin.bias is None else lin.bias.clone()) for lin in linears]
        for lin in linears:
            if lin.bias is None:
                lin.bias = nn.Parameter(torch.zeros(lin.out_features, dtype=lin.weight.dtype))
            lin.bias += lin.weight @ (projector @ mu)
            lin.weight -= lin.weight @ projector
        if not torch.allclose(model.head(z), wanted, atol=FOLD_TOLERANCE):
            for lin, (weight, bias) in zip(linears, saved, strict=True):
                lin.weight.copy_(weight)
                if bias is None:
                    lin.bias = None
                else:
                    lin.bias.copy_(bias)
            return False
    return True


def reproject(model, u: torch.Tensor) -> None:
    """Project the head's weights off the directions U again (after an optimiser step)."""
    with torch.no_grad():
        for lin in linears_of(model):
            lin.weight -= (lin.weight @ u) @ u.T
