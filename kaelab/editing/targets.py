"""Alternative outputs for the forgotten samples (KAE paper, Algorithm 1, step 3: ``alt_output``).

Everything lives in the KAE's observable space, vectors as rows: ``keys_edit`` [E, p] are the
latent inputs whose outputs must change, ``keys_keep`` [P, p] the retained latent inputs,
``outputs_keep`` [P, p] the retained outputs (phi(x_j) of retained samples, Algorithm 1 step 1b) with
their class labels ``labels_keep`` [P]; ``W`` [p, p] is the operator (z_out = W z_in).

* ``nearest_retained`` (the reference's): the post-image W k' of the retained input k' nearest to
  each edit key (Euclidean, in observable space);
* ``class_centroid``: every edit key goes to the centroid of class ``redirect_to``'s outputs (the
  paper's Figure 4, 4 -> 9);
* ``nearest_retained_centroid``: each edit key goes to the output centroid of the retained class
  whose centroid is nearest to the key's current output W k (the class it is most easily mistaken
  for), i.e. into the middle of a retained cluster rather than onto one, possibly borderline,
  neighbour.
"""

from __future__ import annotations

import torch

from kaelab.errors import ConfigError, check_choice

TARGET_STRATEGIES = ("nearest_retained", "class_centroid", "nearest_retained_centroid")


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


def alternative_outputs(
    strategy: str,
    W: torch.Tensor,
    keys_edit: torch.Tensor,
    keys_keep: torch.Tensor,
    outputs_keep: torch.Tensor,
    labels_keep: torch.Tensor,
    num_classes: int,
    redirect_to: int | None = None,
) -> torch.Tensor:
    """Target outputs [E, p] for the edit keys under ``strategy`` (see module docstring)."""
    if strategy == "nearest_retained":
        return keys_keep[nearest_rows(keys_edit, keys_keep)] @ W.T
    centroids = class_centroids(outputs_keep, labels_keep, num_classes)
    return centroid_outputs(strategy, W, keys_edit, centroids, redirect_to)


def centroid_outputs(
    strategy: str, W: torch.Tensor, keys_edit: torch.Tensor, centroids: torch.Tensor, redirect_to: int | None = None
) -> torch.Tensor:
    """Targets [E, p] of the centroid strategies, from the retained classes' output centroids
    [C, p] (NaN rows: classes that are not retained)."""
    if strategy == "class_centroid":
        if redirect_to is None:
            raise ConfigError("edit.targets=class_centroid needs edit.redirect_to=D (the class to merge into)")
        return centroids[redirect_to].expand(len(keys_edit), -1).clone()
    if strategy == "nearest_retained_centroid":
        present = torch.nonzero(~centroids.isnan().any(1)).flatten()
        nearest = present[nearest_rows(keys_edit @ W.T, centroids[present])]
        return centroids[nearest]
    check_choice(strategy, TARGET_STRATEGIES, "edit.targets")
    raise AssertionError(f"edit.targets={strategy!r} is listed but not implemented")
