"""How well the KAE stands in for the network (KAE paper, Sec. 4 and Table 1, left half).

test x_i -> preprocess -> KAE -> inverse preprocess -> the rest of the base model (its final
layer for the default x_j) -> class prediction, compared with the labels and with the base model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kaelab.koopman.kae import LOSS_TERMS, KoopmanAutoencoder
from kaelab.koopman.preprocessing import PairPreprocessor
from kaelab.metrics import accuracy_report


@torch.no_grad()
def predict_target(
    kae: KoopmanAutoencoder,
    prep: PairPreprocessor,
    x_i: torch.Tensor,
    batch_size: int = 8192,
    K: torch.Tensor | None = None,
) -> torch.Tensor:
    """The surrogate's x_j in the base model's space, for base-model x_i (with the KAE's own
    operator, or ``K`` in its place, e.g. an edited one)."""
    kae.eval()
    K = kae.koopman.matrix() if K is None else K.to(torch.float32)
    out = []
    for start in range(0, len(x_i), batch_size):
        z = kae.encoder(prep.transform_source(x_i[start : start + batch_size]))
        out.append(prep.inverse_target(kae.decoder(z @ K.T)))
    return torch.cat(out)


def state_fvu(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Fraction of the variance of ``true`` left unexplained by ``pred`` (1 - R^2 over all dims)."""
    resid = (true.double() - pred.double()).pow(2).sum()
    total = (true.double() - true.double().mean(0)).pow(2).sum()
    return (resid / total).item()


@torch.no_grad()
def mean_loss_terms(kae: KoopmanAutoencoder, x_i: torch.Tensor, x_j: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Each loss term averaged over a whole split, in batches of the training batch size."""
    kae.eval()
    K = kae.koopman.matrix()
    sums = dict.fromkeys(LOSS_TERMS, 0.0)
    for start in range(0, len(x_i), batch_size):
        terms = kae.loss_terms(x_i[start : start + batch_size], x_j[start : start + batch_size], K)
        n = len(x_i[start : start + batch_size])
        for t in LOSS_TERMS:
            sums[t] += terms[t].item() * n
    return {t: v / len(x_i) for t, v in sums.items()}


@torch.no_grad()
def evaluate_surrogate(
    net: nn.Module,
    target_layer: str,
    kae: KoopmanAutoencoder,
    prep: PairPreprocessor,
    x_i: torch.Tensor,
    x_j: torch.Tensor,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    split: str = "test",
) -> dict[str, Any]:
    """``base/{split}_acc*``, ``kae/{split}_acc*``, ``kae/agreement`` and ``kae/state_fvu`` for one split.

    x_i, x_j are the base model's representations of ``inputs``; the surrogate's x_j goes through
    ``net.forward_from(target_layer, .)`` (``net``: the base model's Trajectory, kaelab/models/trajectory.py).
    """
    net.eval()
    base_pred = net(inputs).argmax(1)
    x_j_hat = predict_target(kae, prep, x_i)
    kae_pred = net.forward_from(target_layer, x_j_hat).argmax(1)
    suffix = "" if split == "test" else f"_{split}"
    metrics: dict[str, Any] = {}
    metrics.update(accuracy_report(base_pred, labels, num_classes, prefix=f"base/{split}_"))
    metrics.update(accuracy_report(kae_pred, labels, num_classes, prefix=f"kae/{split}_"))
    metrics[f"kae/agreement{suffix}"] = (kae_pred == base_pred).double().mean().item()
    metrics[f"kae/state_fvu{suffix}"] = state_fvu(x_j_hat, x_j)
    return metrics
