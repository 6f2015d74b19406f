"""The KAE's whole path: its intermediate steps against the base model's intermediate blocks.

The KAE paper (Sec. 4.1-4.2, and its future work) notes that the decoded intermediate states
phi^-1(A^t phi(x_i)), A = exp(G/k), "naturally" resemble the network's intermediate layers. Here
that is measured and, optionally, trained for:

* mapping (``block_steps``): the base model's blocks strictly between x_i (step 0) and x_j (step k),
  l = 1..n, go to steps t_l = round(l k / (n + 1)) (evenly spaced; ``kae.path.steps`` lists others);
* common space (``BlockAligner``): each block is preprocessed as the paper does x_i (Sec. 3.3:
  mean-centre, top-q PCA, Frobenius norm ``kae.scale``), then rotated onto the preprocessed x_j by
  orthogonal Procrustes (Eq. 11 with x_j the anchor), the space where the KAE's decoder maps;
  fitted on the training split;
* fidelity (``path_fidelity``): per block, the state FVU of the decoded step against the aligned
  block (1 - R^2) and linear CKA (Kornblith et al. 2019; invariant to rotation and scale, so it
  does not depend on the alignment), with the straight line from x_i to x_j as a baseline;
* path loss (``KoopmanAutoencoder(path_lambda > 0)``): the mean over blocks of the MSE between the
  decoded step t_l and block l, added to Eq. 7.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kaelab.errors import ConfigError
from kaelab.koopman.preprocessing import Chain, FrobeniusNormalize, MeanCenter, PCAProjection, ProcrustesAlign
from kaelab.koopman.surrogate import state_fvu


def intermediate_blocks(names: Sequence[str], source: str, target: str) -> list[str]:
    """The representations strictly between ``source`` and ``target`` (in the network's order)."""
    names = list(names)
    return names[names.index(source) + 1 : names.index(target)]


def block_steps(n_blocks: int, k: int, steps: Sequence[int] | None = None) -> list[int]:
    """KAE step t_l of each of ``n_blocks`` intermediate blocks: evenly spaced over 0..k (exclusive),
    t_l = floor(l k / (n + 1) + 1/2) for l = 1..n, or the given ``steps`` after checking them."""
    if steps is None:
        if n_blocks > k - 1:
            raise ConfigError(
                f"kae.path: {n_blocks} intermediate blocks need at least {n_blocks + 1} KAE steps, kae.k={k}"
            )
        return [int(b * k / (n_blocks + 1) + 0.5) for b in range(1, n_blocks + 1)]
    steps = [int(t) for t in steps]
    if len(steps) != n_blocks:
        raise ConfigError(
            f"kae.path.steps={steps} maps {len(steps)} blocks, the base model has {n_blocks} between x_i and x_j"
        )
    if any(not 1 <= t <= k - 1 for t in steps) or any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ConfigError(f"kae.path.steps={steps} must increase strictly within 1..{k - 1} (kae.k={k})")
    return steps


class BlockAligner:
    """Sec. 3.3 for each intermediate block (Eqs. 8-10), then Procrustes onto the preprocessed x_j
    (Eq. 11): the space where the KAE's decoded steps live. Fit on the training split.

    Examples:
        >>> import torch, kaelab as kl
        >>> anchor = torch.randn(50, 3)
        >>> rotated = 7.0 * anchor @ torch.linalg.qr(torch.randn(3, 3))[0] + 1.0
        >>> aligner = kl.BlockAligner(q=None, scale=float(torch.linalg.matrix_norm(anchor - anchor.mean(0))))
        >>> aligned = aligner.fit({"block": rotated}, anchor - anchor.mean(0)).transform("block", rotated)
        >>> torch.allclose(aligned, anchor - anchor.mean(0), atol=1e-3)
        True
    """

    def __init__(self, q: int | None, scale: float):
        self.q, self.scale = q, scale
        self.chains: dict[str, Chain] = {}
        self.aligns: dict[str, ProcrustesAlign] = {}

    def fit(self, blocks: dict[str, torch.Tensor], anchor: torch.Tensor) -> BlockAligner:
        """``blocks``: training representations per block; ``anchor``: preprocessed training x_j."""
        for name, x in blocks.items():
            chain = Chain(MeanCenter(), PCAProjection(self.q), FrobeniusNormalize(self.scale))
            xp = chain.fit_transform(x)
            if xp.shape != anchor.shape:
                raise ConfigError(
                    f"kae.path: block {name} preprocesses to {tuple(xp.shape[1:])} dims, x_j to "
                    f"{tuple(anchor.shape[1:])}: set kae.q to align them"
                )
            self.chains[name], self.aligns[name] = chain, ProcrustesAlign().fit(xp, anchor)
        return self

    def transform(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.aligns[name].transform(self.chains[name].transform(x))

    def stack(self, reps: dict[str, torch.Tensor]) -> torch.Tensor:
        """The aligned blocks of one split as [n, n_blocks, d] (the path loss's targets)."""
        return torch.stack([self.transform(name, reps[name]) for name in self.chains], dim=1)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same samples (rows), in [0, 1]; 1 iff they agree up
    to rotation and isotropic scale: ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) (Kornblith et
    al. 2019; how a KAE step matches a block, Sec. 3.4's intermediate states).

    Examples:
        >>> import torch, kaelab as kl
        >>> x = torch.randn(100, 4)
        >>> round(kl.linear_cka(x, 3 * x @ torch.linalg.qr(torch.randn(4, 4))[0]), 6)
        1.0
    """
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    num = torch.linalg.matrix_norm(y.T @ x) ** 2
    den = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return (num / den).item() if den > 0 else float("nan")


@torch.no_grad()
def decoded_steps(kae, x_i: torch.Tensor, steps: Sequence[int], batch_size: int = 4096) -> list[torch.Tensor]:
    """phi^-1(A^t phi(x_i)) for each t in ``steps`` (preprocessed x_i), batched."""
    kae.eval()
    parts = [kae.decode_steps(xb, steps) for xb in x_i.split(batch_size)]
    return [torch.cat([p[s] for p in parts]) for s in range(len(steps))]


def path_fidelity(
    decoded: Sequence[torch.Tensor], blocks: Sequence[torch.Tensor], x_i: torch.Tensor, x_j: torch.Tensor, fracs
) -> dict[str, list[float]]:
    """Per block: FVU and linear CKA of the decoded step phi^-1(A^t phi(x_i)) (Sec. 3.4, Eq. 12)
    against the aligned block, and the FVU of the straight line (1 - f) x_i + f x_j at the same
    fraction f = t_l / k of the path. ``kae_path_fidelity`` computes the decoded steps for you.

    Examples:
        >>> import torch, kaelab as kl
        >>> x_i, x_j = torch.randn(64, 3), torch.randn(64, 3)
        >>> mid = 0.5 * (x_i + x_j)
        >>> fid = kl.path_fidelity([mid], [mid], x_i, x_j, [0.5])
        >>> fid["fvu"], fid["cka"], fid["fvu_line"]
        ([0.0], [1.0], [0.0])
    """
    out: dict[str, list[float]] = {"fvu": [], "cka": [], "fvu_line": []}
    for dec, blk, f in zip(decoded, blocks, fracs, strict=True):
        out["fvu"].append(state_fvu(dec, blk))
        out["cka"].append(linear_cka(dec, blk))
        out["fvu_line"].append(state_fvu((1 - f) * x_i + f * x_j, blk))
    return out


def kae_path_fidelity(
    kae, x_i: torch.Tensor, x_j: torch.Tensor, blocks: Sequence[torch.Tensor], steps: Sequence[int] | None = None
) -> dict[str, list]:
    """How closely a fitted ``KAE``'s decoded steps phi^-1(A^t phi(x_i)), A = exp(G/k) (Eq. 12),
    follow the network's intermediate ``blocks`` (each preprocessed into x_j's space, e.g. by
    ``BlockAligner``): per block the FVU and linear CKA of its step, the straight line's FVU, and
    the steps used (evenly spaced over 1..k-1 by default, ``block_steps``).

    Examples:
        >>> import torch, kaelab as kl
        >>> x_i, x_j = torch.randn(128, 4), torch.randn(128, 4)
        >>> kae = kl.KAE(k=6, hidden=[8], latent_dim=6, epochs=1, batch_size=64).fit(x_i, x_j)
        >>> fid = kl.kae_path_fidelity(kae, x_i, x_j, [0.5 * (x_i + x_j)])
        >>> fid["steps"], len(fid["fvu"])
        ([3], 1)
    """
    k = kae.module_.koopman.k
    steps = block_steps(len(blocks), k, steps)
    decoded = list(kae.decoded_steps(x_i, steps))
    return {**path_fidelity(decoded, blocks, x_i, x_j, [t / k for t in steps]), "steps": steps}
