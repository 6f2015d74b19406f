"""Figure of path fidelity (kaelab.koopman.path): per intermediate block of the base model, how
close the KAE's decoded step is to it (FVU, lower is closer; linear CKA, higher is closer), with the
straight line from x_i to x_j as a baseline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kaelab.viz.style import save_figure  # noqa: E402


def plot_path_fidelity(
    blocks: Sequence[str], steps: Sequence[int], k: int, fid: dict[str, list[float]], path: Path, title: str
) -> Path:
    """Two panels against depth (block, with its KAE step): FVU (and the straight line's), CKA."""
    x = list(range(1, len(blocks) + 1))
    ticks = [f"{b}\nstep {t}/{k}" for b, t in zip(blocks, steps, strict=True)]
    fig, (ax_f, ax_c) = plt.subplots(1, 2, figsize=(10, 4.2))
    ax_f.plot(x, fid["fvu"], "o-", color="tab:blue", label="KAE decoded step")
    ax_f.plot(x, fid["fvu_line"], "s--", color="tab:gray", label="straight line x_i -> x_j")
    ax_f.set(ylabel="FVU vs aligned block (lower: closer)", title="state FVU per block", ylim=(0, None))
    ax_c.plot(x, fid["cka"], "o-", color="tab:orange", label="KAE decoded step")
    ax_c.set(ylabel="linear CKA (higher: closer)", title="linear CKA per block", ylim=(0, 1.02))
    for ax in (ax_f, ax_c):
        ax.set_xticks(x, ticks, fontsize=7)
        ax.set_xlabel("intermediate block of the base model (depth)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
