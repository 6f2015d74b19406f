"""Neural representations x_1..x_L of a trained network (KAE paper, Sec. 3.1): states of its trajectory.

Representations are taken with BatchNorm in eval mode, for every split of the base model's data,
and cached as safetensors under a key of the base model's key, the content hash of its weights
(``kaelab.cache.tensors_digest``: a base model rebuilt with other weights gets its own) and the layer
names, so a sweep over KAE settings extracts them once. Each tensor's own digest is stored beside it
(``digests.json``): what a KAE's key includes of the representations it trains on.

For a sequence model with ``model.positions`` the samples are token positions
(kaelab/models/positions.py): each state ``[B, T, d]`` is read at the drawn (window, position)
rows, a sample's label is the target there, and the draw's settings are part of the key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from kaelab.cache import ArtifactCache, config_key, tensors_digest
from kaelab.errors import ConfigError
from kaelab.models.positions import draw_positions, sequence_layout, window_batches
from kaelab.models.trajectory import Trajectory

log = logging.getLogger(__name__)


def resolve_layer(names: Sequence[str], layer: int | str, key: str) -> str:
    """A layer given as an index into the trajectory's state ``names`` (negative from the end) or a
    state name, checked; ``key`` names the config entry for the error."""
    names = list(names)
    listing = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    if isinstance(layer, str) and not layer.lstrip("-").isdigit():
        if layer not in names:
            raise ConfigError(f"{key}={layer!r} is not a representation of the base model ({listing})")
        return layer
    idx = int(layer)
    if not -len(names) <= idx < len(names):
        raise ConfigError(f"{key}={idx} is out of range for the base model's {len(names)} representations ({listing})")
    return names[idx]


@torch.no_grad()
def extract(
    traj: Trajectory, x: torch.Tensor, layers: Sequence[str] | None = None, batch_size: int = 8192
) -> dict[str, torch.Tensor]:
    """The representations x_1..x_L (KAE paper, Eq. 1: the output of each f_i) named ``layers``
    (default: every state of the trajectory) for inputs ``x``, as ``{name: [n, d]}``; taken in eval
    mode (BatchNorm with its running statistics), the module's mode restored afterwards.

    Examples:
        >>> import torch, kaelab as kl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> traj = kl.trajectory(net, torch.randn(4, 2), stages=["0", "1"], head="2")
        >>> {name: tuple(r.shape) for name, r in kl.extract(traj, torch.randn(10, 2)).items()}
        {'0': (10, 8), '1': (10, 8)}
    """
    layers = list(traj.names) if layers is None else list(layers)
    missing = [n for n in layers if n not in traj.names]
    if missing:
        raise ConfigError(f"{missing[0]!r} is not a state of the trajectory ({', '.join(traj.names)})")
    idx = {n: traj.names.index(n) for n in layers}
    last = max(idx.values())
    outputs: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    was_training = traj.training
    traj.eval()
    try:
        for start in range(0, len(x), batch_size):
            s = traj.prefix(x[start : start + batch_size])
            for t in range(last + 1):
                if t > 0:
                    s = traj.stages[t - 1](s)
                for n, i in idx.items():
                    if i == t:
                        outputs[n].append(s.detach())
    finally:
        traj.train(was_training)
    return {n: torch.cat(v) for n, v in outputs.items()}


@torch.no_grad()
def extract_positions(
    traj: Trajectory, x: torch.Tensor, where: torch.Tensor, layers: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """The representations x_1..x_L (KAE paper, Eq. 1) of ``layers`` at token positions: for
    inputs ``x`` (windows) and the (window, position) rows ``where`` ``[n, 2]`` (``draw_positions``),
    each state ``[B, T, d]`` read at those rows, ``{name: [n, d]}``; only the windows named are run.

    Examples:
        >>> import torch, kaelab as kl
        >>> net = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 5))
        >>> x = torch.randint(0, 5, (3, 6))
        >>> traj = kl.trajectory(net, x[:2], stages=["0", "1"], head="2")
        >>> reps = kl.extract_positions(traj, x, torch.tensor([[0, 1], [2, 5]]), ["1"])
        >>> torch.equal(reps["1"][1], net[1](net[0](x))[2, 5])
        True
    """
    tokens, dim = sequence_layout(traj)
    layers = list(traj.names) if layers is None else list(layers)
    out: dict[str, torch.Tensor] = {}
    for windows, rows, local in window_batches(where, tokens):
        for name, rep in extract(traj, x[windows], layers).items():
            if name not in out:
                out[name] = rep.new_empty(len(where), dim)
            out[name][rows] = rep.reshape(len(windows), tokens, dim)[local, where[rows, 1]]
    return {n: out.get(n, torch.empty(0, dim)) for n in layers}


def representations_key(base_key: str, weights: str, layers: Sequence[str], split_sizes: dict[str, int]) -> str:
    """Cache key of the representations of ``layers`` of the base model ``base_key`` whose weights
    have the content hash ``weights`` (``tensors_digest`` of its trajectory's ``state_dict()``)."""
    return config_key("representations", base_key, weights, sorted(dict.fromkeys(layers)), split_sizes)


Reps = dict[str, dict[str, torch.Tensor]]  # {split: {layer: tensor}}


def cached_representations(
    cache: ArtifactCache, base_key: str, traj: Trajectory, splits: dict[str, torch.Tensor], layers: Sequence[str]
) -> Reps:
    """``{split: {layer: tensor}}`` for the base model ``base_key``, extracted once and cached."""
    return representations_and_digests(cache, base_key, traj, splits, layers)[0]


def representations_and_digests(
    cache: ArtifactCache,
    base_key: str,
    traj: Trajectory,
    splits: dict[str, torch.Tensor],
    layers: Sequence[str],
    where: dict[str, torch.Tensor] | None = None,
    positions: dict[str, int] | None = None,
) -> tuple[Reps, dict[str, str]]:
    """``cached_representations`` and each tensor's content hash (``{"split/layer": digest}``); keyed
    by the content hash of ``traj``'s weights too, so they follow the weights, not only ``base_key``.
    With ``where`` (``{split: [n, 2]}`` (window, position) rows drawn by ``positions``, the
    ``model.positions`` settings, part of the key) the samples are those token positions."""
    layers = list(dict.fromkeys(layers))
    weights = tensors_digest(traj.state_dict())
    key = representations_key(base_key, weights, layers, {s: len(x) for s, x in splits.items()})
    if where is not None:  # positions as samples: another entry per draw
        key = config_key("representations at positions", key, positions)

    def build(tmp: Path) -> None:
        tensors = {}
        for split, x in splits.items():
            n = len(x) if where is None else len(where[split])
            log.info("extracting %s for %d %s samples", layers, n, split)
            reps = extract(traj, x, layers) if where is None else extract_positions(traj, x, where[split], layers)
            for layer, rep in reps.items():
                tensors[f"{split}/{layer}"] = rep.contiguous()
        save_file(tensors, str(tmp / "representations.safetensors"))
        if where is not None:  # the rows read, so that a load can tell they are this draw's
            save_file({s: w.contiguous() for s, w in where.items()}, str(tmp / "positions.safetensors"))
        digests = {name: tensors_digest({name: t}) for name, t in tensors.items()}
        (tmp / "digests.json").write_text(json.dumps(digests, indent=1, sort_keys=True))

    def load(path: Path) -> tuple[Reps, dict[str, str]]:
        out: Reps = {}
        tensors = load_file(str(path / "representations.safetensors"))
        for name, t in tensors.items():
            split, layer = name.split("/", 1)
            out.setdefault(split, {})[layer] = t
        digests = json.loads((path / "digests.json").read_text())
        if not isinstance(digests, dict) or set(digests) != set(tensors):
            raise ValueError("digests.json does not list the stored tensors")
        if where is not None:
            stored = load_file(str(path / "positions.safetensors"))
            if set(stored) != set(where) or not all(torch.equal(stored[s], w) for s, w in where.items()):
                raise ValueError("the stored representations were read at other positions")
        return out, digests

    # a file that cannot be read makes the cache rebuild the entry (ArtifactCache.load)
    manifest = {"base_model": base_key, "base_weights": weights, "layers": layers}
    if where is not None:
        manifest["positions"] = positions
    return cache.load("representations", key, build, load, manifest)


@dataclass
class Representations:
    """The base model's inputs, labels and representations per split (``reps[split][layer]``)."""

    inputs: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    reps: dict[str, dict[str, torch.Tensor]]
    num_classes: int
    digests: dict[str, str] = field(default_factory=dict)  # {"split/layer": content hash}
    # token positions as samples (model.positions): {split: [n, 2] (window, position) rows into
    # ``inputs[split]``}, and the draw's settings; empty / None: one sample per input
    where: dict[str, torch.Tensor] = field(default_factory=dict)
    positions: dict[str, int] | None = None

    def content_hash(self, layers: Sequence[str]) -> str:
        """The content hash of the representations of ``layers`` (every split): what a KAE trained
        on them has in its key."""
        names = [f"{split}/{layer}" for split in self.reps for layer in layers]
        missing = [n for n in names if n not in self.digests]
        if missing:
            raise KeyError(f"no content hash of the representation {missing[0]}")
        return config_key("representations content", {n: self.digests[n] for n in names})


def split_representations(
    cache: ArtifactCache, base, layers: Sequence[str], n_samples: int | None = None
) -> Representations:
    """Representations of ``layers`` for every split of the base model's data (``base``: a
    ``kaelab.base_model.BaseModel``), from the cache; only the first ``n_samples`` of each split
    when given (a smoke test). With ``base.positions`` (``model.positions``) the samples are token
    positions (``position_representations``)."""
    dm = base.datamodule
    inputs = {s: dm.tensors(s)[0][:n_samples] for s in dm.splits}
    labels = {s: dm.tensors(s)[1][:n_samples] for s in dm.splits}
    if getattr(base, "positions", None) is not None:
        return position_representations(cache, base, layers, inputs, labels)
    reps, digests = representations_and_digests(cache, base.key, base.trajectory, inputs, layers)
    return Representations(inputs, labels, reps, dm.num_classes, digests)


def position_representations(cache: ArtifactCache, base, layers: Sequence[str], inputs, targets) -> Representations:
    """``split_representations`` with token positions as samples: ``base.positions["per_window"]``
    positions per window drawn from each split's targets ``[N, T]`` (``draw_positions``, seeded by
    ``base.positions["seed"]``), each sample's label the target at its position (the next token)."""
    spec = base.positions
    where = {s: draw_positions(y, spec["per_window"], spec["seed"]) for s, y in targets.items()}
    labels = {s: targets[s][w[:, 0], w[:, 1]] for s, w in where.items()}
    reps, digests = representations_and_digests(cache, base.key, base.trajectory, inputs, layers, where, spec)
    return Representations(inputs, labels, reps, base.datamodule.num_classes, digests, where, dict(spec))
