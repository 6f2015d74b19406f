"""kaelab: how a trained network transforms its representations, through Koopman operators.

Two papers as a library: the Koopman autoencoder (KAE) surrogate of a network's layers, with its
k intermediate steps, operator editing (EMMET) and topology (Betti numbers); and DMD layer
replacement on time-delay coordinates. Everything below works on tensors in memory, on any
``nn.Module``: no config, no disk. ``python -m kaelab`` runs the same calls as Hydra stages, with
a cache, loggers and a run directory.

    import kaelab as kl
    traj = kl.trajectory(net, x[:8], stages=["blocks.*"], head="fc")  # any network, named layers
    reps = kl.extract(traj, x_train)                                  # {layer: [n, d]}
    prep = kl.PairPreprocessor().fit(reps["blocks.0"], reps["blocks.3"])
    kae = kl.KAE(k=10, epochs=20).fit(*prep.transform(reps["blocks.0"], reps["blocks.3"]))
    kl.surrogate_report(traj, prep, kae, x_test, y_test, source="blocks.0", target="blocks.3")

See ``examples/quickstart.py`` for a whole session on MNIST.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module defining it; imported on first use, so `python -m kaelab` and
# `import kaelab` stay fast (torch and Lightning load only when an object is asked for)
_EXPORTS = {
    # a network as a trajectory through depth (KAE paper, Eq. 1) and its representations
    "Trajectory": "kaelab.models.trajectory",
    "trajectory": "kaelab.models.trajectory",
    "extract": "kaelab.koopman.representations",
    # a sequence model read at token positions: positions as samples, the head per position
    "draw_positions": "kaelab.models.positions",
    "extract_positions": "kaelab.koopman.representations",
    "PositionView": "kaelab.models.positions",
    # preprocessing (Sec. 3.3, Eqs. 8-11)
    "PairPreprocessor": "kaelab.koopman.preprocessing",
    # the Koopman autoencoder (Sec. 3.1-3.4, Eqs. 2-7, 12) and its scoring as a surrogate (Sec. 4)
    "KAE": "kaelab.koopman.estimator",
    "KoopmanAutoencoder": "kaelab.koopman.kae",
    "surrogate_report": "kaelab.koopman.surrogate",
    # path fidelity of the KAE's intermediate steps, and the operator's spectrum
    "BlockAligner": "kaelab.koopman.path",
    "kae_path_fidelity": "kaelab.koopman.path",
    "path_fidelity": "kaelab.koopman.path",
    "linear_cka": "kaelab.koopman.path",
    "Spectrum": "kaelab.koopman.spectrum",
    "decompose": "kaelab.koopman.spectrum",
    # editing (Sec. 4.3, Algorithm 1, App. D)
    "emmet": "kaelab.editing.emmet",
    "emmet_edit": "kaelab.editing.unlearning",
    "unlearn_classes": "kaelab.editing.unlearning",
    "TargetRule": "kaelab.editing.targets",
    "NearestRetained": "kaelab.editing.targets",
    "ClassCentroid": "kaelab.editing.targets",
    "NearestRetainedCentroid": "kaelab.editing.targets",
    # topology (Sec. 4.2, App. A.1)
    "betti_numbers": "kaelab.topology.betti",
    "betti_curves": "kaelab.topology.betti",
    "beta0": "kaelab.topology.betti",
    "beta0_path": "kaelab.topology.betti",
    "eps_grid": "kaelab.topology.betti",
    # DMD layer replacement (the Koopman layers paper)
    "DMDReplacement": "kaelab.dmd.callback",
    "HybridNet": "kaelab.dmd.hybrid",
    "delay_embed": "kaelab.dmd.delay",
    "fit_delay_dmd": "kaelab.dmd.operator",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kaelab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
