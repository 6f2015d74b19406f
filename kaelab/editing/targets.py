"""Alternative outputs for the forgotten samples (KAE paper, Algorithm 1, step 3: ``alt_output``).

Everything lives in the KAE's observable space, vectors as rows: ``keys_edit`` [E, p] are the
latent inputs whose outputs must change and ``W`` [p, p] is the operator (z_out = W z_in). A target
rule maps them to target outputs [E, p], reading what it needs of the retained samples from a
``Retained`` (their keys phi(x_i), outputs phi(x_j) (Algorithm 1 step 1b), labels and per-class
output centroids, each computed on first use).

Built-in rules (``edit.targets=NAME``, a shorthand for the ``_target_`` in ``TARGET_RULES``):

* ``nearest_retained`` (the reference's): the post-image W k' of the retained input k' nearest to
  each edit key (Euclidean, in observable space);
* ``class_centroid``: every edit key goes to the centroid of class ``redirect_to``'s outputs (the
  paper's Figure 4, 4 -> 9);
* ``nearest_retained_centroid``: each edit key goes to the output centroid of the retained class
  whose centroid is nearest to the key's current output W k (the class it is most easily mistaken
  for), i.e. into the middle of a retained cluster rather than onto one, possibly borderline,
  neighbour.

A user's rule subclasses ``TargetRule`` and is named by its ``_target_`` (``edit.targets={_target_:
mypkg.MyRule, ...}``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from kaelab.errors import ConfigError, check_choice

# built-in rule name -> its _target_ (kaelab.editing.config resolves edit.targets=NAME through this)
TARGET_RULES = {
    "nearest_retained": "kaelab.editing.targets.NearestRetained",
    "class_centroid": "kaelab.editing.targets.ClassCentroid",
    "nearest_retained_centroid": "kaelab.editing.targets.NearestRetainedCentroid",
}


def nearest_rows(queries: torch.Tensor, pool: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Index into ``pool`` of the nearest row to each query (Euclidean; chunked: O(chunk * P) memory)."""
    pool_sq = pool.pow(2).sum(1)
    out = []
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        # ||q - x||^2 = ||q||^2 - 2 q.x + ||x||^2; ||q||^2 does not change the argmin
        out.append((pool_sq - 2 * q @ pool.T).argmin(1))
    return torch.cat(out)


def class_centroids(outputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[num_classes, p] mean output per class (NaN rows for classes without samples)."""
    sums = torch.zeros(num_classes, outputs.shape[1], dtype=outputs.dtype).index_add_(0, labels, outputs)
    counts = torch.bincount(labels, minlength=num_classes).to(outputs.dtype)
    return sums / counts[:, None]


Lazy = torch.Tensor | Callable[[], torch.Tensor]


class Retained:
    """The retained samples as a target rule sees them (rows are vectors). ``keys`` [P, p] and
    ``outputs`` [P, p] are tensors or functions computing them, called on first use, so a rule pays
    only for the encodings it reads; ``centroids`` [C, p] (e.g. from kaelab.editing.statistics)
    default to the class means of ``outputs``, with NaN rows for classes that are not retained."""

    def __init__(
        self, labels: torch.Tensor, num_classes: int, keys: Lazy, outputs: Lazy, centroids: torch.Tensor | None = None
    ):
        self.labels, self.num_classes = labels, num_classes
        self._keys, self._outputs, self._centroids = keys, outputs, centroids

    @property
    def keys(self) -> torch.Tensor:
        if callable(self._keys):
            self._keys = self._keys()
        return self._keys

    @property
    def outputs(self) -> torch.Tensor:
        if callable(self._outputs):
            self._outputs = self._outputs()
        return self._outputs

    @property
    def centroids(self) -> torch.Tensor:
        if self._centroids is None:
            self._centroids = class_centroids(self.outputs, self.labels, self.num_classes)
        return self._centroids


class TargetRule(ABC):
    """Where Algorithm 1 (KAE paper, App. D, step 3) sends the forgotten keys: ``rule(W, keys_edit,
    retained)`` -> targets [E, p]. Subclass it for a rule of your own and pass it as ``targets=``
    (or name it by ``_target_`` in ``edit.targets``).

    Examples:
        >>> import torch, kaelab as kl
        >>> class ToOrigin(kl.TargetRule):
        ...     def __call__(self, W, keys_edit, retained):
        ...         return torch.zeros_like(keys_edit)
        >>> x, y = torch.randn(60, 3), torch.arange(60) % 3
        >>> kae = kl.KAE(k=2, hidden=[8], latent_dim=4, epochs=1, batch_size=30).fit(x, x)
        >>> edited = kl.emmet_edit(kae, x, x, y, forget=[0], targets=ToOrigin(), mu=1e-6, lam=1e-6)
        >>> edited.edit_["edit"].info.n_edit
        20
    """

    # True: the rule reads every retained key (``retained.keys``), so the per-class key statistics
    # cannot stand in for the retained samples and are not built for it
    reads_keys: bool = False

    @abstractmethod
    def __call__(self, W: torch.Tensor, keys_edit: torch.Tensor, retained: Retained) -> torch.Tensor: ...


class NearestRetained(TargetRule):
    """The post-image W k' of the retained key k' nearest to each edit key (the reference's choice
    for Algorithm 1, step 3; KAE paper, App. D).

    Examples:
        >>> import torch, kaelab as kl
        >>> from kaelab.editing.targets import Retained
        >>> kept = Retained(torch.tensor([0, 1]), 2, keys=torch.tensor([[1.0, 0.0], [0.0, 1.0]]), outputs=torch.eye(2))
        >>> kl.NearestRetained()(2 * torch.eye(2), torch.tensor([[0.9, 0.1]]), kept).tolist()
        [[2.0, 0.0]]
    """

    reads_keys = True

    def __call__(self, W: torch.Tensor, keys_edit: torch.Tensor, retained: Retained) -> torch.Tensor:
        return retained.keys[nearest_rows(keys_edit, retained.keys)] @ W.T


class ClassCentroid(TargetRule):
    """Every edit key to the output centroid of class ``redirect_to`` (KAE paper, Figure 4: 4 -> 9).

    Examples:
        >>> import torch, kaelab as kl
        >>> from kaelab.editing.targets import Retained
        >>> outs = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
        >>> kept = Retained(torch.tensor([0, 0, 1]), 2, keys=outs, outputs=outs)
        >>> kl.ClassCentroid(redirect_to=0)(torch.eye(2), torch.zeros(2, 2), kept).tolist()
        [[2.0, 0.0], [2.0, 0.0]]
    """

    def __init__(self, redirect_to: int):
        self.redirect_to = redirect_to

    def __call__(self, W: torch.Tensor, keys_edit: torch.Tensor, retained: Retained) -> torch.Tensor:
        centroid = retained.centroids[self.redirect_to]
        if centroid.isnan().any():
            raise ConfigError(f"edit.redirect_to={self.redirect_to} is not a retained class with training samples")
        return centroid.expand(len(keys_edit), -1).clone()


class NearestRetainedCentroid(TargetRule):
    """Each edit key to the output centroid of the retained class nearest to its current output W k
    (a variant of Algorithm 1, step 3; KAE paper, App. D): kaelab's default.

    Examples:
        >>> import torch, kaelab as kl
        >>> from kaelab.editing.targets import Retained
        >>> outs = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
        >>> kept = Retained(torch.tensor([0, 0, 1]), 2, keys=outs, outputs=outs)
        >>> kl.NearestRetainedCentroid()(torch.eye(2), torch.tensor([[0.0, 4.0]]), kept).tolist()
        [[0.0, 5.0]]
    """

    def __call__(self, W: torch.Tensor, keys_edit: torch.Tensor, retained: Retained) -> torch.Tensor:
        centroids = retained.centroids
        present = torch.nonzero(~centroids.isnan().any(1)).flatten()
        nearest = present[nearest_rows(keys_edit @ W.T, centroids[present])]
        return centroids[nearest]


def target_rule(spec: str | TargetRule, redirect_to: int | None = None) -> TargetRule:
    """A rule from a built-in name (``TARGET_RULES``; ``redirect_to`` goes to ``class_centroid``)
    or a rule object, returned as it is. Config files name rules by ``_target_``
    (kaelab.editing.config builds those)."""
    from kaelab.instantiate import instantiate

    if isinstance(spec, TargetRule):
        if redirect_to is not None:
            raise ConfigError(f"redirect_to={redirect_to} is given with a built rule ({type(spec).__name__})")
        return spec
    check_choice(spec, TARGET_RULES, "edit.targets")
    extra = {} if redirect_to is None else {"redirect_to": redirect_to}
    return instantiate({"_target_": TARGET_RULES[spec]}, "edit.targets", **extra)
