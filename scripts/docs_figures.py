"""The figures of the documentation site (docs/img/*.png), from one tiny real run on Yin-Yang data.

    python scripts/docs_figures.py [--out docs/img]

Everything goes through the public API (``import kaelab as kl``) on generated data (no download):
a Yin-Yang residual MLP trained for a few seconds, a KAE between its first and last state, its
surrogate report, an EMMET edit, Betti numbers, path fidelity, the operator's spectrum and a DMD
replacement. The numbers in the figures are those of this small run, not of the papers' settings.
The figures are generated, not committed: the docs build (scripts/gen_docs_reference.py's
``on_pre_build`` hook) runs this when one of ``FIGURES`` is missing (about 15 s on 2 cores).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from torch import nn

import kaelab as kl
from kaelab.data.yinyang import yinyang_sample
from kaelab.models import ResMLP

CLASSES = ["yin", "yang", "dot"]
COLORS = ["tab:blue", "tab:orange", "tab:green"]
DPI = 90


def data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    xy, y = yinyang_sample(n, seed)
    return torch.tensor(xy, dtype=torch.float32), torch.tensor(y)


def train_net(x: torch.Tensor, y: torch.Tensor, epochs: int = 30) -> nn.Module:
    """The KAE paper's Yin-Yang ResMLP (2 -> 10, 5 blocks, -> 3), trained by plain Adam."""
    torch.manual_seed(0)
    net = ResMLP(in_dim=2, width=10, n_blocks=5, out_dim=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(256):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def pca2(z: torch.Tensor) -> np.ndarray:
    z = z.double() - z.double().mean(0)
    _, _, vh = torch.linalg.svd(z, full_matrices=False)
    return (z @ vh[:2].T).numpy()


def save(fig, out: Path, name: str) -> None:
    fig.tight_layout()
    tmp = out / f".{name}.tmp.png"
    fig.savefig(tmp, dpi=DPI)
    tmp.replace(out / name)  # a build reading docs/img never sees half a file
    plt.close(fig)
    print(f"{out / name}: {(out / name).stat().st_size // 1024} KB")


def scatter(ax, pts: np.ndarray, y: torch.Tensor, title: str) -> None:
    for c, (name, color) in enumerate(zip(CLASSES, COLORS, strict=True)):
        m = (y == c).numpy()
        ax.scatter(pts[m, 0], pts[m, 1], s=3, color=color, label=name)
    ax.set(title=title, xlabel="PC 1", ylabel="PC 2")


def fig_trajectory(traj, x, y, out: Path) -> None:
    states = traj.states(x)
    picks = [0, 2, 4, len(states) - 1]
    fig, axes = plt.subplots(1, len(picks), figsize=(12, 3.2))
    for ax, t in zip(axes, picks, strict=True):
        scatter(ax, pca2(states[t].detach()), y, f"state {t}: {traj.names[t]}")
    axes[0].legend(title="class", markerscale=3, fontsize=8)
    fig.suptitle("The ResMLP's trajectory through depth (top-2 principal components of each state)")
    save(fig, out, "trajectory_states.png")


def fig_preprocessing(reps, prep, source, target, y, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, style in ((source, "o-"), (target, "s-")):
        z = reps[name].double() - reps[name].double().mean(0)
        sv = torch.linalg.svdvals(z)
        axes[0].semilogy(np.arange(1, len(sv) + 1), (sv / sv[0]).numpy(), style, label=f"{name}")
    axes[0].set(title="Singular values (Eq. 9 keeps the top q)", xlabel="component", ylabel="s / s_1")
    axes[0].legend(title="layer")
    x_i, x_j = prep.transform(reps[source], reps[target])
    axes[1].scatter(x_j[:, 0], x_j[:, 1], s=3, color="grey", label="x_j (preprocessed)")
    axes[1].scatter(x_i[:, 0], x_i[:, 1], s=3, color="tab:red", label="x_i rotated onto x_j (Eq. 11)")
    axes[1].set(title="Coordinates 1-2 after Eqs. 8-11", xlabel="coordinate 1", ylabel="coordinate 2")
    axes[1].legend(markerscale=3, fontsize=8)
    save(fig, out, "preprocessing.png")


def fig_kae(kae, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    hist = kae.history_
    terms = [k for k in hist[0] if k.startswith("train/loss_")]
    for key in terms:
        axes[0].semilogy([row[key] for row in hist], label=key.removeprefix("train/loss_"))
    axes[0].set(title="KAE loss terms (Eqs. 3-6)", xlabel="epoch", ylabel="loss")
    axes[0].legend(title="term", fontsize=8)
    spec = kl.decompose(kae.module_.koopman.G.detach(), k=kae.module_.koopman.k)
    t = np.linspace(0, 2 * np.pi, 200)
    axes[1].plot(np.cos(t), np.sin(t), color="grey", lw=0.8, label="unit circle")
    eig = spec.eig_K.numpy()
    axes[1].scatter(eig.real, eig.imag, s=14, color="tab:purple", label="eigenvalues of K = exp(G)")
    axes[1].set(title="Spectrum of the trained operator K", xlabel="Re", ylabel="Im")
    axes[1].set_aspect("equal", adjustable="datalim")  # a circle stays round, the panel keeps its size
    axes[1].legend(fontsize=8, loc="lower left")
    save(fig, out, "kae_training.png")


def per_class_bars(ax, series: dict[str, list[float]], title: str) -> None:
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        ax.bar(np.arange(len(values)) + i * width, values, width, label=label)
    ax.set_xticks(np.arange(len(CLASSES)) + 0.4 - width / 2, CLASSES)
    ax.set(title=title, xlabel="class", ylabel="test accuracy", ylim=(0, 1.05))
    ax.legend(fontsize=8, loc="lower right")


def fig_surrogate(report, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    series = {"network": report["base/test_acc_per_class"], "KAE surrogate": report["kae/test_acc_per_class"]}
    per_class_bars(ax, series, f"Surrogate of blocks 0-4 (agreement {report['kae/agreement']:.3f})")
    save(fig, out, "surrogate.png")


def fig_editing(before, after, forget: int, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    series = {"before the edit": before["kae/test_acc_per_class"], "after (EMMET)": after["kae/test_acc_per_class"]}
    per_class_bars(ax, series, f"Forgetting class '{CLASSES[forget]}' by editing K (Algorithm 1)")
    save(fig, out, "editing.png")


def fig_topology(traj, reps, steps, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    last = steps[-1]
    grid = kl.eps_grid(0.0, float(torch.cdist(last, last).max()) / 4, 60)
    for t in (0, len(steps) // 2, len(steps) - 1):
        axes[0].plot(grid, kl.betti_curves(steps[t], grid, maxdim=0)[0], label=f"step {t}")
    axes[0].set(title="beta_0 curves of the KAE's decoded steps", xlabel="eps", ylabel="beta_0", yscale="log")
    axes[0].legend(title="KAE step", fontsize=8)
    eps = float(grid[len(grid) // 6])
    axes[1].plot(kl.beta0_path(steps, eps), "o-", ms=3, label=f"KAE steps, eps = {eps:.2f}")
    axes[1].set(title="beta_0 through the KAE's steps", xlabel="step t", ylabel="beta_0")
    axes[1].legend(fontsize=8)
    save(fig, out, "topology.png")


def fig_path_spectrum(kae, fid, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    blocks = np.arange(1, len(fid["fvu"]) + 1)
    axes[0].plot(blocks, fid["fvu"], "o-", label="KAE step (FVU)")
    axes[0].plot(blocks, fid["fvu_line"], "s--", label="straight line (FVU)")
    axes[0].plot(blocks, fid["cka"], "^-", label="KAE step (linear CKA)")
    axes[0].set(title="Path fidelity: KAE steps vs blocks", xlabel="intermediate block", ylabel="value")
    axes[0].set_xticks(blocks, [f"{b} (t={t})" for b, t in zip(blocks, fid["steps"], strict=True)])
    axes[0].legend(fontsize=8)
    spec = kl.decompose(kae.module_.koopman.G.detach(), k=kae.module_.koopman.k)
    mags = spec.eig_K.abs().numpy()
    axes[1].bar(np.arange(1, len(mags) + 1), mags, color="tab:purple", label="|eigenvalue of K|")
    axes[1].axhline(1.0, color="grey", lw=0.8, ls=":", label="unit circle")
    axes[1].set(title="Modes of K, by |eigenvalue|", xlabel="mode", ylabel="|lambda|")
    axes[1].legend(fontsize=8)
    save(fig, out, "path_spectrum.png")


def fig_dmd(traj, x, y, x_test, y_test, out: Path) -> None:
    S = torch.stack(traj.states(x), dim=1).detach()
    n = S.shape[1] - 1
    with torch.no_grad():
        base = (traj(x_test).argmax(1) == y_test).float().mean().item()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for h in (0, 1):
        accs, spans = [], list(range(h + 1, n + 1))
        for b in spans:
            op = kl.fit_delay_dmd(S[:, : b + 1], h=h, rank=-1).operator
            with torch.no_grad():
                pred = kl.HybridNet(traj, op, span=(0, b))(x_test).argmax(1)
            accs.append((pred == y_test).float().mean().item())
        ax.plot([b - h for b in spans], accs, "o-", label=f"h = {h} delays")
    ax.axhline(base, color="grey", ls=":", label="the network")
    ax.set(title="DMD replacing the ResMLP's blocks", xlabel="layers replaced", ylabel="test accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # a count of layers
    ax.legend(fontsize=8)
    save(fig, out, "dmd.png")


FIGURES = ("trajectory_states.png", "preprocessing.png", "kae_training.png", "surrogate.png", "editing.png",
           "topology.png", "path_spectrum.png", "dmd.png")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    make_figures(ap.parse_args().out)


def make_figures(out: Path) -> None:
    """Every figure of the site into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    x, y = data(3000, 42)
    x_test, y_test = data(1000, 40)
    net = train_net(x, y)
    traj = kl.trajectory(net, x[:8])
    reps = kl.extract(traj, x)
    source, target = traj.names[0], traj.names[-1]
    prep = kl.PairPreprocessor().fit(reps[source], reps[target])
    x_i, x_j = prep.transform(reps[source], reps[target])
    kae = kl.KAE(k=20, hidden=[30], latent_dim=20, lr=1e-2, epochs=120, batch_size=256).fit(x_i, x_j)
    report = kl.surrogate_report(traj, prep, kae, x_test, y_test, source=source, target=target)
    edited = kl.emmet_edit(kae, x_i, x_j, y, forget=[2])
    after = kl.surrogate_report(traj, prep, edited, x_test, y_test, source=source, target=target)
    test_reps = kl.extract(traj, x_test)
    test_i, test_j = prep.transform(test_reps[source], test_reps[target])
    blocks = traj.names[1:-1]
    aligner = kl.BlockAligner(q=prep.q, scale=prep.scale).fit({b: reps[b] for b in blocks}, x_j)
    aligned = [aligner.transform(b, test_reps[b]) for b in blocks]
    fid = kl.kae_path_fidelity(kae, test_i, test_j, aligned)
    fig_trajectory(traj, x_test, y_test, out)
    fig_preprocessing(reps, prep, source, target, y, out)
    fig_kae(kae, out)
    fig_surrogate(report, out)
    fig_editing(report, after, 2, out)
    fig_topology(traj, reps, kae.decoded_steps(test_i[:600]), out)
    fig_path_spectrum(kae, fid, out)
    fig_dmd(traj, x, y, x_test, y_test, out)


if __name__ == "__main__":
    main()
