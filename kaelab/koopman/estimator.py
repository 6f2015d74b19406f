"""``KAE``: the Koopman autoencoder with a scikit-learn / PyDMD-style face (KAE paper, Sec. 3).

``KAE(k=10).fit(x_i, x_j)`` trains a ``KoopmanAutoencoder`` (a LightningModule, Eqs. 2-7 and 12)
on two preprocessed representation matrices and returns itself; what it learnt ends in ``_``
(``module_``, ``operator_``, ``history_``). Everything stays in memory: nothing is logged or written
to disk unless a ``trainer`` that does so is passed, or ``save`` is called. The ``task=kae`` stage
is this same call with the run's Trainer (loggers, checkpoints, the spike guard) and the cache.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from safetensors.torch import load_file, save_file

from kaelab.data.tensor_data import InMemoryDataModule
from kaelab.errors import ConfigError
from kaelab.koopman.kae import KoopmanAutoencoder
from kaelab.koopman.path import decoded_steps
from kaelab.precision import resolve_precision

__all__ = ["KAE"]


@contextlib.contextmanager
def _quiet(on: bool):
    """Lightning's info lines (accelerators, stopping) held back while the default trainer runs:
    a notebook's ``fit`` prints nothing unless something is wrong."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    if on:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class EpochHistory(L.Callback):
    """The epoch-level values a fit logged (``train/loss``, ``val/loss``, ...), one dict an epoch."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row = {k: float(v) for k, v in trainer.callback_metrics.items() if "/" in k and v.numel() == 1}
        self.rows.append({"epoch": trainer.current_epoch, **row})


def _pairs(x_i: torch.Tensor, x_j: torch.Tensor, blocks: torch.Tensor | None, what: str) -> tuple[torch.Tensor, ...]:
    if x_i.ndim != 2 or x_j.shape != x_i.shape:
        raise ConfigError(f"{what}: x_i and x_j must be matrices of one shape [n, d], got {tuple(x_i.shape)} and "
                          f"{tuple(x_j.shape)} (preprocess them with PairPreprocessor)")  # fmt: skip
    if blocks is not None and (blocks.ndim != 3 or len(blocks) != len(x_i)):
        raise ConfigError(f"{what}: blocks must be [n, n_blocks, d] with n = {len(x_i)}, got {tuple(blocks.shape)}")
    tensors = (x_i, x_j) if blocks is None else (x_i, x_j, blocks)
    return tuple(t.detach().float().contiguous() for t in tensors)


class KAE:
    """A Koopman autoencoder surrogate x_j ~ phi^-1(K phi(x_i)) (KAE paper, Eq. 2), K = exp(G/k)^k (Eq. 12).

    Trained with the four-term loss of Eqs. 3-7 (and, with ``path_lambda`` > 0, the path loss of
    ``kaelab.koopman.path``) by AdamW under a one-cycle LR, through Lightning.

    Args:
        epochs, batch_size: the training schedule (``kae.epochs``, ``kae.batch_size``).
        seed: seeds the weights and the batch order; the same seed gives the same weights.
        precision: Lightning's precision of the default trainer (``auto``: ``bf16-mixed`` where the
            CPU multiplies bf16 natively, kaelab.precision); the operator's matrix exponential and the
            isometry loss's distances stay in fp32.
        **hyper: ``KoopmanAutoencoder`` hyper-parameters (``hidden``, ``latent_dim``, ``k``,
            ``lambdas``, ``lr``, ``weight_decay``, ``g_init``, ``path_lambda``, ...), with its defaults.

    Fitted attributes: ``module_`` (the ``KoopmanAutoencoder``), ``operator_`` (K [p, p], float64;
    replaced in an edited copy), ``history_`` (per-epoch losses), ``trainer_``, ``fit_time_s_``.

    Examples:
        >>> import torch, kaelab as kl
        >>> x_i, x_j = torch.randn(256, 4), torch.randn(256, 4)
        >>> kae = kl.KAE(k=5, hidden=[8], latent_dim=6, epochs=2, batch_size=64).fit(x_i, x_j)
        >>> kae.predict(x_i).shape, kae.operator_.shape, kae.decoded_steps(x_i[:3]).shape
        (torch.Size([256, 4]), torch.Size([6, 6]), torch.Size([6, 3, 4]))
    """

    def __init__(
        self, *, epochs: int = 1000, batch_size: int = 1024, seed: int = 0, precision: str = "32-true", **hyper: Any
    ):
        for key, value in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"kae.{key}={value} must be an integer >= 1")
        allowed = set(inspect.signature(KoopmanAutoencoder.__init__).parameters) - {"self", "dim"}
        unknown = set(hyper) - allowed
        if unknown:
            raise ConfigError(f"KAE got unknown hyper-parameters {sorted(unknown)} (see KoopmanAutoencoder)")
        self.epochs, self.batch_size, self.seed, self.hyper = epochs, batch_size, seed, dict(hyper)
        self.precision = resolve_precision(precision)
        self.edited = False

    # ---------------------------------------------------------------------------------- fitting
    def fit(
        self,
        x_i: torch.Tensor,
        x_j: torch.Tensor,
        *,
        blocks: torch.Tensor | None = None,
        val: Sequence[torch.Tensor] | None = None,
        trainer: L.Trainer | None = None,
    ) -> KAE:
        """Train on preprocessed pairs ``x_i``, ``x_j`` [n, d] (rows matched); returns ``self``.

        ``blocks`` [n, n_blocks, d]: aligned intermediate blocks for the path loss (``path_lambda``
        > 0). ``val``: ``(x_i, x_j[, blocks])`` of a validation split (``val/loss`` per epoch).
        ``trainer``: a Lightning Trainer to fit with (the default logs nothing, writes nothing and
        runs ``epochs`` epochs on the CPU)."""
        train = _pairs(x_i, x_j, blocks, "KAE.fit")
        splits = {"train": train}
        if val is not None:
            splits["val"] = _pairs(val[0], val[1], val[2] if len(val) > 2 else None, "KAE.fit(val=...)")
        dm = InMemoryDataModule(splits, batch_size=self.batch_size, shuffle_seed=self.seed)
        dm.setup()
        L.seed_everything(self.seed, workers=True, verbose=False)
        self.module_ = KoopmanAutoencoder(dim=train[0].shape[1], **self.hyper)
        history = EpochHistory()
        with _quiet(trainer is None):
            self.trainer_ = trainer if trainer is not None else self._quiet_trainer(history, has_val=val is not None)
        t0 = time.perf_counter()
        with _quiet(trainer is None):
            self.trainer_.fit(self.module_, datamodule=dm)
        self.fit_time_s_ = time.perf_counter() - t0
        self.module_.eval()
        self.history_ = history.rows
        self.operator_ = self.module_.koopman.matrix().detach().double()
        self.edited = False
        return self

    def _quiet_trainer(self, history: EpochHistory, has_val: bool) -> L.Trainer:
        return L.Trainer(
            limit_val_batches=1.0 if has_val else 0, precision=self.precision,
            max_epochs=self.epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[history], num_sanity_val_steps=0,
        )  # fmt: skip

    @classmethod
    def from_module(cls, module: KoopmanAutoencoder, **settings: Any) -> KAE:
        """Wrap a trained ``KoopmanAutoencoder`` (e.g. from the cache) as a fitted ``KAE``."""
        hyper = {k: v for k, v in module.hparams.items() if k != "dim"}
        kae = cls(**settings, **hyper)
        kae.module_ = module.eval()
        kae.operator_ = module.koopman.matrix().detach().double()
        kae.history_ = []
        return kae

    def _check_fitted(self) -> None:
        if not hasattr(self, "module_"):
            raise RuntimeError("this KAE is not fitted yet: call fit(x_i, x_j) first")

    # -------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 16384) -> torch.Tensor:
        """Observables phi(x) [n, p] of preprocessed states ``x`` [n, d]."""
        self._check_fitted()
        enc = self.module_.encoder
        return torch.cat([enc(b.float()) for b in x.split(batch_size)])

    @torch.no_grad()
    def decode(self, z: torch.Tensor, batch_size: int = 16384) -> torch.Tensor:
        """States phi^-1(z) [n, d] of observables ``z`` [n, p]."""
        self._check_fitted()
        dec = self.module_.decoder
        return torch.cat([dec(b.float()) for b in z.split(batch_size)])

    def predict(self, x_i: torch.Tensor) -> torch.Tensor:
        """The surrogate's x_j: phi^-1(K phi(x_i)) (Eq. 2), with this KAE's ``operator_``."""
        return self.decode(self.encode(x_i) @ self.operator_.float().T)

    def decoded_steps(self, x_i: torch.Tensor, steps: Sequence[int] | None = None) -> torch.Tensor:
        """phi^-1(A^t phi(x_i)) with A = exp(G/k) (Eq. 12) for each t in ``steps`` (default 0..k):
        the k intermediate states of Sec. 3.4, as a tensor [len(steps), n, d]."""
        self._check_fitted()
        if self.edited:
            raise ValueError("an edited operator K' has no learnt one-step root A: decode the unedited KAE's steps")
        k = self.module_.koopman.k
        if steps is None:  # all k + 1 states, stepping z by A (KoopmanAutoencoder.trajectory)
            with torch.no_grad():
                return torch.cat([self.module_.trajectory(b.float())[1] for b in x_i.split(4096)], dim=1)
        steps = [int(t) for t in steps]
        if any(not 0 <= t <= k for t in steps):
            raise ValueError(f"steps must lie in 0..{k}, got {steps}")
        order = sorted(set(steps))  # KoopmanAutoencoder.decode_steps chains powers of A in increasing order
        decoded = dict(zip(order, decoded_steps(self.module_, x_i.float(), order), strict=True))
        return torch.stack([decoded[t] for t in steps])

    @torch.no_grad()
    def loss_terms(self, x_i: torch.Tensor, x_j: torch.Tensor, batch_size: int | None = None) -> dict[str, float]:
        """The four unweighted losses of Eqs. 3-6 averaged over all pairs (with ``operator_``)."""
        self._check_fitted()
        from kaelab.koopman.surrogate import mean_loss_terms

        K = self.operator_.float()
        return mean_loss_terms(self.module_, x_i.float(), x_j.float(), batch_size or self.batch_size, K=K)

    def spectrum(self):
        """Eigendecomposition of the generator G (``kaelab.koopman.spectrum.Spectrum``): modes of
        K = exp(G) and A = exp(G/k) (Eq. 12)."""
        self._check_fitted()
        if self.edited:
            raise ValueError("an edited operator K' has no learnt generator G: take the unedited KAE's spectrum")
        from kaelab.koopman.spectrum import decompose

        return decompose(self.module_.koopman.G.detach(), self.module_.koopman.k)

    def with_operator(self, K: torch.Tensor, **info: Any) -> KAE:
        """A copy of this KAE whose surrogate uses ``K`` (e.g. an edited operator, KAE paper
        Sec. 4.3) instead of exp(G); encoder and decoder are shared, this KAE is unchanged."""
        self._check_fitted()
        p = self.operator_.shape[0]
        if K.shape != (p, p):
            raise ConfigError(f"the operator must be [{p}, {p}], got {tuple(K.shape)}")
        out = copy.copy(self)
        out.operator_ = K.detach().double().clone()
        out.edited, out.edit_ = True, info
        return out

    # --------------------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``kae.safetensors`` (weights) and ``kae.json`` (hyper-parameters) to ``directory``."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.module_.state_dict().items()}
        save_file(state, str(directory / "kae.safetensors"))
        settings = {"epochs": self.epochs, "batch_size": self.batch_size, "seed": self.seed}
        (directory / "kae.json").write_text(json.dumps({"module": dict(self.module_.hparams), **settings}, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> KAE:
        """A fitted KAE from ``save``'s files (safetensors and JSON: no pickle is loaded)."""
        directory = Path(directory)
        meta = json.loads((directory / "kae.json").read_text())
        module = KoopmanAutoencoder(**meta["module"])
        module.load_state_dict(load_file(str(directory / "kae.safetensors")))
        settings = {k: meta[k] for k in ("epochs", "batch_size", "seed")}
        return cls.from_module(module, **settings)

    def __repr__(self) -> str:
        fitted = "fitted" if hasattr(self, "module_") else "not fitted"
        args = ", ".join(f"{k}={v!r}" for k, v in {**self.hyper, "epochs": self.epochs}.items())
        return f"KAE({args}; {fitted}{', edited' if self.edited else ''})"
