"""Per-class sufficient statistics of a KAE's training keys and outputs, for fast repeated edits.

Algorithm 1 touches every training sample only through sums: EMMET's preserved-key covariance
C0 = sum over retained samples of k k^T (k = phi(x_i)), and the centroid targets' class means of
phi(x_j). Both are sums over classes of per-class terms, so one pass over the training split gives,
per class c,

    gram[c]       = sum_{y = c} phi(x_i) phi(x_i)^T     [p, p], float64
    output_sum[c] = sum_{y = c} phi(x_j)                  [p],    float64
    count[c]

and an edit that forgets any set of classes needs only these and the forgotten samples' own keys:
C0 = sum of the retained classes' grams. On MNIST (p = 800, 55,000 pairs) the pass costs a few
seconds once per KAE (cached by ``kaelab.editing.pipeline``), after which an edit encodes only the
~5,500 forgotten samples instead of all 55,000 and skips the 49,500 x 800 x 800 product for C0.
The reference's ``nearest_retained`` targets need the individual retained keys and cannot use this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kaelab.errors import ConfigError


@dataclass
class KeyStatistics:
    gram: torch.Tensor  # [C, p, p] float64
    output_sum: torch.Tensor  # [C, p] float64
    count: torch.Tensor  # [C] int64

    @property
    def num_classes(self) -> int:
        return len(self.count)

    def retained(self, forget: Sequence[int]) -> torch.Tensor:
        """Boolean mask [C] of the classes kept (those with samples that are not forgotten)."""
        keep = self.count > 0
        keep[list(forget)] = False
        return keep

    def preserve_gram(self, forget: Sequence[int]) -> torch.Tensor:
        """sum over the retained samples of k k^T: EMMET's K0 K0^T [p, p]."""
        return self.gram[self.retained(forget)].sum(0)

    def n_preserved(self, forget: Sequence[int]) -> int:
        return int(self.count[self.retained(forget)].sum())

    def output_centroids(self, forget: Sequence[int]) -> torch.Tensor:
        """[C, p] mean phi(x_j) per retained class; NaN rows for forgotten or empty classes."""
        cent = self.output_sum / self.count.clamp_min(1).to(self.output_sum.dtype)[:, None]
        cent[~self.retained(forget)] = float("nan")
        return cent

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"gram": self.gram.contiguous(), "output_sum": self.output_sum.contiguous(), "count": self.count}

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> KeyStatistics:
        stats = cls(sd["gram"], sd["output_sum"], sd["count"])
        c, p = stats.output_sum.shape
        if stats.gram.shape != (c, p, p) or stats.count.shape != (c,):
            raise ValueError(f"inconsistent key statistics: gram {tuple(stats.gram.shape)}, outputs {(c, p)}")
        return stats


@torch.no_grad()
def key_statistics(
    kae, x_i: torch.Tensor, x_j: torch.Tensor, labels: torch.Tensor, num_classes: int, batch_size: int = 8192
) -> KeyStatistics:
    """One pass over preprocessed training pairs (x_i, x_j) [n, d] with labels [n]."""
    if not len(x_i) == len(x_j) == len(labels):
        raise ConfigError(f"key statistics need one label per pair, got {len(x_i)}, {len(x_j)}, {len(labels)}")
    kae.eval()
    p = kae.koopman.G.shape[0]
    gram = torch.zeros(num_classes, p, p, dtype=torch.float64)
    out_sum = torch.zeros(num_classes, p, dtype=torch.float64)
    for s in range(0, len(x_i), batch_size):
        y = labels[s : s + batch_size]
        k = kae.encoder(x_i[s : s + batch_size]).double()
        z = kae.encoder(x_j[s : s + batch_size]).double()
        out_sum.index_add_(0, y, z)
        for c in torch.unique(y).tolist():
            kc = k[y == c]
            gram[c] += kc.T @ kc
    return KeyStatistics(gram, out_sum, torch.bincount(labels, minlength=num_classes))
