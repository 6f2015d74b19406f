"""The Koopman autoencoder (KAE paper, Sec. 3.1-3.4) as a LightningModule.

encoder phi and decoder phi^-1 are mirrored (untied) MLPs with LeakyReLU and a linear last layer;
K = exp(G/k)^k advances observables (kaelab.koopman.operator). Losses, each a mean squared error:

  recon  (Eq. 3)  phi^-1(phi(x)) vs x, averaged over x_i and x_j (the reference's ``.mean()``;
                  ``recon_reduction="sum"`` adds them, which doubles lambda_recon)
  linear (Eq. 4)  K phi(x_i) vs phi(x_j)
  state  (Eq. 5)  phi^-1(K phi(x_i)) vs x_j
  iso    (Eq. 6)  distances between distinct pairs of the batch, latent vs preprocessed space, for
                  x_i and for x_j (the reference's torch.cdist MSE up to a factor (n-1)/n)

total = sum of lambda_term * term (Eq. 7), plus, with ``path_lambda`` > 0 (not in the paper,
kaelab.koopman.path), ``path_lambda`` times the path loss: the MSE between the decoded steps
phi^-1(A^{t_l} phi(x_i)) and the aligned intermediate blocks l, averaged over blocks.
``grad_clip`` (not in the paper) bounds the global
gradient norm: the MNIST KAE at the paper's lr 5e-3 can blow up at the schedule's peak.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning as L
import torch
from torch import nn
from torch.nn.functional import mse_loss

from kaelab.errors import ConfigError
from kaelab.koopman.config import LOSS_TERMS, RECON_REDUCTIONS, check_kae_values
from kaelab.koopman.operator import KoopmanOperator
from kaelab.metrics import EpochMeans, last_train_batch
from kaelab.precision import fp32
from kaelab.schedules import triangular_lr

__all__ = ["LOSS_TERMS", "RECON_REDUCTIONS", "KoopmanAutoencoder", "mlp", "pairwise_distance_mse"]


def pairwise_distance_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MSE between the Euclidean distances of distinct pairs within ``a`` and within ``b``.

    ``b`` is a fixed target (no gradient). The same value is computed with ``pdist`` (condensed
    upper triangle) for low-dimensional ``a`` and with ``cdist`` (full matrix, whose zero diagonal is
    discounted by n/(n-1)) for high-dimensional ``a``, whichever is faster on the CPU: pdist's
    backward is ~2x faster than cdist's at d=20 and ~1.5x slower at d=800.
    """
    with fp32():  # distances in fp32 whatever the training precision (pdist has no bf16 kernel)
        a, b = a.float(), b.float()
        if a.shape[1] <= 64:
            with torch.no_grad():
                target = torch.nn.functional.pdist(b)
            return mse_loss(torch.nn.functional.pdist(a), target)
        with torch.no_grad():
            target = torch.cdist(b, b)
        n = len(a)
        return mse_loss(torch.cdist(a, a), target) * (n / max(n - 1, 1))


def mlp(dims: Sequence[int], negative_slope: float) -> nn.Sequential:
    """Linear layers through ``dims`` with LeakyReLU between them; the last layer is linear."""
    layers: list[nn.Module] = []
    for idx, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if idx < len(dims) - 2:
            layers.append(nn.LeakyReLU(negative_slope))
    return nn.Sequential(*layers)


class KoopmanAutoencoder(L.LightningModule):
    """The KAE as a LightningModule: encoder phi, decoder phi^-1, operator K = exp(G/k)^k (Eqs. 2, 12),
    trained on the loss of Eq. 7 (terms: Eqs. 3-6; see the module docstring). ``kaelab.KAE`` fits one
    from tensors; the ``task=kae`` stage from a config. Defaults: the Yin-Yang KAE of App. C.

    Examples:
        >>> import torch, kaelab as kl
        >>> m = kl.KoopmanAutoencoder(dim=4, hidden=[8], latent_dim=6, k=5)
        >>> terms = m.loss_terms(torch.randn(32, 4), torch.randn(32, 4))
        >>> sorted(terms), m(torch.randn(3, 4)).shape
        (['iso', 'linear', 'recon', 'state'], torch.Size([3, 4]))
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (30,),
        latent_dim: int = 20,
        k: int = 100,
        lambdas: Mapping[str, float] | None = None,
        g_init: str = "identity",
        negative_slope: float = 0.01,
        lr: float = 0.05,
        weight_decay: float = 5e-4,
        warmup_frac: float = 0.2,
        recon_reduction: str = "mean",
        grad_clip: float | None = None,
        path_lambda: float = 0.0,
        path_steps: Sequence[int] | None = None,
        path_rows: str = "all",
    ):
        super().__init__()
        lambdas = dict.fromkeys(LOSS_TERMS, 1.0) if lambdas is None else dict(lambdas)
        check_kae_values(
            lambdas=lambdas, k=k, g_init=g_init, grad_clip=grad_clip, recon_reduction=recon_reduction,
            path_lambda=path_lambda, path_steps=path_steps, latent_dim=latent_dim, path_rows=path_rows,
        )  # fmt: skip
        if path_lambda > 0 and not path_steps:
            raise ConfigError("kae.path.lam > 0 needs intermediate blocks (path_steps) to follow")
        self.recon_scale = 0.5 if recon_reduction == "mean" else 1.0
        self.save_hyperparameters()  # after lambdas is filled in: hparams are complete
        self.path_lambda = float(path_lambda)
        self.path_steps = [int(t) for t in path_steps] if path_steps else []
        self.path_rows = path_rows
        self.lambdas = {t: float(lambdas.get(t, 0.0)) for t in LOSS_TERMS}
        dims = [dim, *hidden, latent_dim]
        self.encoder = mlp(dims, negative_slope)
        self.decoder = mlp(dims[::-1], negative_slope)
        self.koopman = KoopmanOperator(latent_dim, k, g_init)
        self._train_means, self._grad_norms = EpochMeans(), EpochMeans()

    # ------------------------------------------------------------------------------- inference
    def forward(self, x_i: torch.Tensor) -> torch.Tensor:
        """The KAE's prediction of x_j: phi^-1(K phi(x_i)) (Eq. 2)."""
        return self.decoder(self.koopman(self.encoder(x_i)))

    @torch.no_grad()
    def trajectory(self, x_i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All k+1 states: latents [k+1, n, p] (A^t phi(x_i)) and their decodings [k+1, n, d].

        The last state equals the k-step prediction ``forward(x_i)`` (up to rounding).
        """
        latents = self.koopman.trajectory(self.encoder(x_i))
        decoded = self.decoder(latents.reshape(-1, latents.shape[-1])).reshape(*latents.shape[:2], -1)
        return latents, decoded

    def decode_steps(self, x_i: torch.Tensor, steps: Sequence[int]) -> list[torch.Tensor]:
        """phi^-1(A^t phi(x_i)) for each t in ``steps``: the decoded states of ``trajectory`` at
        those steps, without the others."""
        if not steps:
            return []
        z = self.encoder(x_i)
        latents = [z @ P.T for P in self.koopman.powers(steps)]
        return list(self.decoder(torch.cat(latents)).split(len(x_i)))

    # ----------------------------------------------------------------------------------- losses
    def loss_terms(
        self,
        x_i: torch.Tensor,
        x_j: torch.Tensor,
        K: torch.Tensor | None = None,
        blocks: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The four unweighted losses for a batch of pairs (one operator evaluation), and the path
        loss when aligned intermediate ``blocks`` [n, n_blocks, d] are given (one per path step)."""
        n = len(x_i)
        # one encoder pass over [x_i; x_j] and one decoder pass over [z_i; z_j; K z_i; path]: fewer, larger matmuls
        z_i, z_j = self.encoder(torch.cat([x_i, x_j])).split(n)
        if blocks is not None:  # the path's steps A^{t_l} z_i and K z_i = A^k z_i in one go (one expm in all)
            *z_path, z_pred = self.koopman.advance(z_i, [*self.path_steps, self.koopman.k])
        else:
            z_path, z_pred = [], z_i @ (self.koopman.matrix() if K is None else K).T
        rows = self._path_rows(n, len(z_path))
        z_path = [z[r] for r, z in zip(rows, z_path, strict=True)]
        rec_i, rec_j, x_pred, *x_path = self.decoder(torch.cat([z_i, z_j, z_pred, *z_path])).split(
            [n, n, n, *(len(z) for z in z_path)]
        )
        terms = {
            "recon": self.recon_scale * (mse_loss(rec_i, x_i) + mse_loss(rec_j, x_j)),
            "linear": mse_loss(z_pred, z_j),
            "state": mse_loss(x_pred, x_j),
            "iso": pairwise_distance_mse(z_i, x_i) + pairwise_distance_mse(z_j, x_j),
        }
        if blocks is not None:
            if blocks.shape[1] != len(self.path_steps):
                raise ConfigError(f"{blocks.shape[1]} path blocks given for {len(self.path_steps)} path steps")
            terms["path"] = torch.stack([mse_loss(x_path[b], blocks[rows[b], b]) for b in range(len(x_path))]).mean()
        return terms

    def _path_rows(self, n: int, n_blocks: int) -> list[slice]:
        """The batch rows each path block's loss is taken on: all of them (``path_rows="all"``), or
        (``"split"``) block b on the b-th of ``n_blocks`` equal slices of the batch. Batches are
        shuffled, so a slice is a random sample and its MSE an unbiased estimate of the block's
        MSE on the whole batch, at one extra decoder pass in all instead of one per block."""
        if self.path_rows == "all" or n_blocks == 0:
            return [slice(None)] * n_blocks
        m = max(1, n // n_blocks)
        return [slice(b * m, (b + 1) * m) if b * m < n else slice(None) for b in range(n_blocks)]

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 7 (+ the path loss); terms with lambda 0 are still computed (and logged) but do not train."""
        total = sum(self.lambdas[t] * terms[t] for t in LOSS_TERMS)
        if "path" in terms:
            total = total + self.path_lambda * terms["path"]
        return total  # type: ignore[return-value]

    def _step(self, batch, stage: str) -> torch.Tensor:
        x_i, x_j, *rest = batch
        terms = self.loss_terms(x_i, x_j, blocks=rest[0] if rest and self.path_lambda > 0 else None)
        loss = self.total_loss(terms)
        values = {f"{stage}/loss": loss, **{f"{stage}/loss_{t}": v for t, v in terms.items()}}
        if stage == "train":  # accumulated here, logged once at the epoch's last batch
            self._train_means.add(values, len(x_i))
        else:
            self._log_epoch(values, len(x_i))
        return loss

    def _log_epoch(self, values: dict[str, torch.Tensor], batch_size: int) -> None:
        """Epoch values; each stage's total loss is also shown in the progress line. sync_dist: under
        DDP every rank sees the same epoch losses (kaelab.rollback decides on them)."""
        for key, value in values.items():
            self.log(key, value, prog_bar=key.endswith("/loss"), on_step=False, on_epoch=True, sync_dist=True,
                     batch_size=batch_size)  # fmt: skip

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if last_train_batch(self._trainer, batch_idx):
            self._log_epoch({**self._train_means.pop(), **self._grad_norms.pop()}, batch_size=1)

    def on_train_epoch_start(self) -> None:
        # nothing accumulated in an epoch cut short carries over
        self._train_means.pop()
        self._grad_norms.pop()

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def on_before_optimizer_step(self, optimizer) -> None:
        """Log the global gradient norm (epoch mean, before clipping) and clip it to ``grad_clip``."""
        max_norm = self.hparams.get("grad_clip") or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm)
        self._grad_norms.add({"train/grad_norm": norm}, 1)

    def configure_optimizers(self):
        # AdamW over all parameters, G included (as the reference's AdamW(model.parameters())).
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        sched = triangular_lr(opt, self.trainer.estimated_stepping_batches, hp.warmup_frac)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
