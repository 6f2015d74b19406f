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
from kaelab.koopman.representations import extract, extract_positions
from kaelab.metrics import accuracy_report
from kaelab.models.positions import PositionView, bits_per_token, sample_logits


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
def mean_loss_terms(
    kae: KoopmanAutoencoder, x_i: torch.Tensor, x_j: torch.Tensor, batch_size: int, K: torch.Tensor | None = None
) -> dict[str, float]:
    """Each loss term (Eqs. 3-6) averaged over a whole split, in batches of the training batch size,
    with the KAE's own operator or ``K`` in its place."""
    kae.eval()
    K = kae.koopman.matrix() if K is None else K
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
    K: torch.Tensor | None = None,
    where: torch.Tensor | None = None,
) -> dict[str, Any]:
    """``base/{split}_acc*``, ``kae/{split}_acc*``, ``kae/agreement`` and ``kae/state_fvu`` for one split.

    x_i, x_j are the base model's representations of ``inputs``; the surrogate's x_j goes through
    ``net.forward_from(target_layer, .)`` (``net``: the base model's Trajectory, kaelab/models/trajectory.py).
    With ``where`` the samples are token positions of the windows ``inputs`` (``net``: the
    trajectory's ``PositionView``, whose head reads one position): the accuracies are next-token
    accuracies, and ``base/{split}_bpb`` and ``kae/{split}_bpb`` their cross-entropy in bits.
    """
    net.eval()
    base_logits = sample_logits(net, inputs, where)
    base_pred = base_logits.argmax(1)
    x_j_hat = predict_target(kae, prep, x_i, K=K)
    kae_logits = net.forward_from(target_layer, x_j_hat)
    kae_pred = kae_logits.argmax(1)
    suffix = "" if split == "test" else f"_{split}"
    metrics: dict[str, Any] = {}
    metrics.update(accuracy_report(base_pred, labels, num_classes, prefix=f"base/{split}_"))
    metrics.update(accuracy_report(kae_pred, labels, num_classes, prefix=f"kae/{split}_"))
    metrics[f"kae/agreement{suffix}"] = (kae_pred == base_pred).double().mean().item()
    metrics[f"kae/state_fvu{suffix}"] = state_fvu(x_j_hat, x_j)
    if where is not None:  # a language model's own measure: bits per token (per byte for bytes)
        metrics[f"base/{split}_bpb"] = bits_per_token(base_logits, labels)
        metrics[f"kae/{split}_bpb"] = bits_per_token(kae_logits, labels)
    return metrics


def surrogate_report(
    traj: nn.Module,
    prep: PairPreprocessor,
    kae,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    source: str,
    target: str,
    num_classes: int | None = None,
    split: str = "test",
    where: torch.Tensor | None = None,
) -> dict[str, Any]:
    """How well a fitted ``KAE`` stands in for the layers between ``source`` (x_i) and ``target``
    (x_j) of ``traj`` (KAE paper, Sec. 4, Table 1): x_i -> preprocess (Eqs. 8-11) -> phi, K, phi^-1
    (Eq. 2) -> inverse preprocessing -> the rest of the network. Returns the base network's and the
    surrogate's accuracy (top-1 and per-class mean), their agreement and the state FVU of x_j.
    ``where``: the (window, position) rows of a sequence model's samples (``kl.draw_positions``),
    ``inputs`` its windows and ``labels`` one per row; x_j must then be the last state.

    Examples:
        >>> import torch, kaelab as kl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 6),
        ...                           torch.nn.Tanh(), torch.nn.Linear(6, 3))
        >>> x, y = torch.randn(200, 2), torch.randint(0, 3, (200,))
        >>> traj = kl.trajectory(net, x[:4], stages=["0", "1", "2", "3"], head="4")
        >>> reps = kl.extract(traj, x)
        >>> prep = kl.PairPreprocessor().fit(reps["1"], reps["3"])
        >>> kae = kl.KAE(k=4, hidden=[12], latent_dim=8, epochs=2, batch_size=50)
        >>> kae = kae.fit(*prep.transform(reps["1"], reps["3"]))
        >>> report = kl.surrogate_report(traj, prep, kae, x, y, source="1", target="3")
        >>> sorted(k for k in report if k.startswith("kae/"))[:3]
        ['kae/agreement', 'kae/state_fvu', 'kae/test_acc']
    """
    module = kae.module_ if hasattr(kae, "module_") else kae
    K = getattr(kae, "operator_", None)
    n_cls = int(labels.max()) + 1 if num_classes is None else num_classes
    if where is not None:  # token positions: windows, per-position labels, the head at one position
        reps = extract_positions(traj, inputs, where, [source, target])
        view = PositionView.of(traj, inputs[:2])
        return evaluate_surrogate(view, target, module, prep, reps[source], reps[target], inputs, labels, n_cls,
                                  split, K=K, where=where)  # fmt: skip
    reps = extract(traj, inputs, [source, target])
    return evaluate_surrogate(traj, target, module, prep, reps[source], reps[target], inputs, labels, n_cls, split, K=K)
