"""Preprocessing of a pair of representations (KAE paper, Sec. 3.3, Eqs. 8-11).

mean-centre (8) -> project on the top-q right singular vectors (9) -> divide by the whole matrix's
Frobenius norm (10; scaled to ``scale``, 100 in the reference) -> orthogonal Procrustes rotation of
x_i onto x_j (11; x_j is the anchor).

Every step is a transform with ``fit`` / ``transform`` / ``inverse_transform`` on [n, d] tensors,
usable on its own for any representation matrix. Fit on the training split only; ``transform`` on
any split reuses the training statistics. Fitting runs in float64.
"""

from __future__ import annotations

import torch
from scipy.linalg import orthogonal_procrustes

from kaelab.errors import ConfigError


class Transform:
    fitted: bool = False

    def fit(self, x: torch.Tensor) -> Transform:
        raise NotImplementedError

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inverse_transform(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fit_transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.fit(x).transform(x)

    def _check(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} used before fit()")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> Transform:
        for k, v in state.items():
            setattr(self, k, v)
        self.fitted = True
        return self


class MeanCenter(Transform):
    """Eq. 8: x - E[x]."""

    def fit(self, x):
        self.mean = x.double().mean(0).float()
        self.fitted = True
        return self

    def transform(self, x):
        self._check()
        return x - self.mean.to(x)

    def inverse_transform(self, x):
        self._check()
        return x + self.mean.to(x)


class PCAProjection(Transform):
    """Eq. 9: x V_q with V_q the top-q right singular vectors of the (centred) training matrix.

    Signs are fixed so that each direction's largest-magnitude loading is positive (as sklearn's
    ``svd_flip``), making the projection deterministic. With q = d the projection is a rotation and
    the inverse is exact; with q < d the inverse maps back into the top-q subspace.
    """

    def __init__(self, q: int | None = None):
        self.q = q

    def fit(self, x):
        d = x.shape[1]
        q = d if self.q is None else self.q
        if not 1 <= q <= min(x.shape):
            raise ConfigError(f"kae.q={q} must be in [1, {min(x.shape)}] for representations of shape {tuple(x.shape)}")
        _, _, vh = torch.linalg.svd(x.double(), full_matrices=False)
        v = vh[:q].T  # [d, q]
        signs = torch.sign(v.gather(0, v.abs().argmax(0, keepdim=True)))
        self.components = (v * signs).float()
        self.fitted = True
        return self

    def transform(self, x):
        self._check()
        return x @ self.components.to(x)

    def inverse_transform(self, x):
        self._check()
        return x @ self.components.to(x).T


class FrobeniusNormalize(Transform):
    """Eq. 10: divide by the training matrix's Frobenius norm, times ``scale`` (reference: 100)."""

    def __init__(self, scale: float = 100.0):
        if scale <= 0:
            raise ConfigError(f"kae.scale must be positive, got {scale}")
        self.scale = scale

    def fit(self, x):
        self.factor = torch.tensor(self.scale / torch.linalg.matrix_norm(x.double()).item())
        self.fitted = True
        return self

    def transform(self, x):
        self._check()
        return x * self.factor.to(x)

    def inverse_transform(self, x):
        self._check()
        return x / self.factor.to(x)


class ProcrustesAlign(Transform):
    """Eq. 11: the orthogonal R minimising ||x_i R - x_j||_F (scipy.linalg.orthogonal_procrustes).

    Fitted on a pair of equally shaped matrices with matched rows; transforms the source side.
    """

    def fit(self, x: torch.Tensor, anchor: torch.Tensor | None = None):  # type: ignore[override]
        if anchor is None or x.shape != anchor.shape:
            raise ConfigError(
                "Procrustes alignment needs source and anchor of the same shape, got "
                f"{tuple(x.shape)} and {None if anchor is None else tuple(anchor.shape)} "
                "(use the same kae.q for both layers)"
            )
        r, _ = orthogonal_procrustes(x.double().numpy(), anchor.double().numpy())
        self.rotation = torch.from_numpy(r).float()
        self.fitted = True
        return self

    def transform(self, x):
        self._check()
        return x @ self.rotation.to(x)

    def inverse_transform(self, x):
        self._check()
        return x @ self.rotation.to(x).T


class Chain(Transform):
    """Transforms applied in order; the inverse applies the inverses in reverse order."""

    def __init__(self, *steps: Transform):
        self.steps = list(steps)

    def fit(self, x):
        for step in self.steps:
            x = step.fit_transform(x)
        self.fitted = True
        return self

    def transform(self, x):
        for step in self.steps:
            x = step.transform(x)
        return x

    def inverse_transform(self, x):
        for step in reversed(self.steps):
            x = step.inverse_transform(x)
        return x


class PairPreprocessor:
    """Sec. 3.3 for a pair (x_i, x_j): centre (Eq. 8), project on the top-``q`` right singular
    vectors (Eq. 9), normalise to Frobenius norm ``scale`` (Eq. 10) each; rotate x_i onto x_j (Eq. 11).

    ``source`` maps the base model's x_i into KAE space; ``target`` maps x_j, and its inverse maps
    a KAE prediction back to the base model's space, where the final layer classifies it. Fit on the
    training split only; ``transform`` reuses the training statistics on any split.

    Examples:
        >>> import torch, kaelab as kl
        >>> x_i, x_j = torch.randn(100, 5), torch.randn(100, 5)
        >>> prep = kl.PairPreprocessor(scale=100.0).fit(x_i, x_j)
        >>> a, b = prep.transform(x_i, x_j)
        >>> round(torch.linalg.matrix_norm(b.double()).item(), 3)
        100.0
        >>> torch.allclose(prep.inverse_target(b), x_j, atol=1e-4)
        True
    """

    def __init__(self, q: int | None = None, scale: float = 100.0):
        self.q, self.scale = q, scale
        self.source = Chain(MeanCenter(), PCAProjection(q), FrobeniusNormalize(scale))
        self.target = Chain(MeanCenter(), PCAProjection(q), FrobeniusNormalize(scale))
        self.align = ProcrustesAlign()

    def fit(self, x_i: torch.Tensor, x_j: torch.Tensor) -> PairPreprocessor:
        if len(x_i) != len(x_j):
            raise ConfigError(f"x_i and x_j need the same samples, got {len(x_i)} and {len(x_j)} rows")
        xi = self.source.fit_transform(x_i)
        xj = self.target.fit_transform(x_j)
        self.align.fit(xi, xj)
        return self

    def transform(self, x_i: torch.Tensor, x_j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both sides into the KAE's space: (``transform_source(x_i)``, ``transform_target(x_j)``)."""
        return self.transform_source(x_i), self.transform_target(x_j)

    def transform_source(self, x_i: torch.Tensor) -> torch.Tensor:
        return self.align.transform(self.source.transform(x_i))

    def inverse_source(self, z: torch.Tensor) -> torch.Tensor:
        return self.source.inverse_transform(self.align.inverse_transform(z))

    def transform_target(self, x_j: torch.Tensor) -> torch.Tensor:
        return self.target.transform(x_j)

    def inverse_target(self, z: torch.Tensor) -> torch.Tensor:
        return self.target.inverse_transform(z)

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for side, chain in (("source", self.source), ("target", self.target)):
            for idx, step in enumerate(chain.steps):
                out.update({f"{side}.{idx}.{k}": v for k, v in step.state_dict().items()})
        out.update({f"align.{k}": v for k, v in self.align.state_dict().items()})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> PairPreprocessor:
        def sub(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

        for side, chain in (("source", self.source), ("target", self.target)):
            for idx, step in enumerate(chain.steps):
                step.load_state_dict(sub(f"{side}.{idx}."))
            chain.fitted = True
        self.align.load_state_dict(sub("align."))
        return self
