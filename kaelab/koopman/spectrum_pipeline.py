"""``task=spectrum``: spectral analysis of the cached KAE's operator (kaelab.koopman.spectrum).

base model, representations, KAE (cached, kaelab.koopman.pipeline.trained_kae)
   -> G = V diag(mu) V^-1, cached as ``cache/spectrum/<key>/decomposition.safetensors`` (keyed by the
      KAE's key and the content hash of its cache entry, so that a KAE rebuilt under the same key
      gets its own; the edit stage's ``edit.strategy=spectral`` reads the same artifact)
   -> metrics ``spectrum/*`` (metrics.json, written first), then the class x mode energy table
      (``spectrum_class_mode_energy.csv``, observables phi(x_i) of the training split) and two figures:
      one that cannot be written (a full disk) is a warning and ``spectrum/artifact_errors``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file

from kaelab.cache import ArtifactCache, config_key
from kaelab.fileio import optional_output, write_csv
from kaelab.koopman.spectrum import (
    Spectrum,
    class_mode_energy,
    class_mode_specificity,
    decompose,
    effective_rank,
    modal_stats,
    mode_separation,
)
from kaelab.metrics import write_metrics
from kaelab.training import build_loggers, log_metrics_to

log = logging.getLogger(__name__)

HEATMAP_MODES = 40  # modes shown in the heatmap: those with the largest share in some class
TOP = 5  # modes listed per class / overall in metrics.json
MAX_SAMPLES = 10000  # training samples (a seeded random subset) for the per-sample mode statistics


def cached_spectrum(cfg: DictConfig, art) -> tuple[Spectrum, bool]:
    """The decomposition of ``art``'s generator, computed once per KAE (its key and content) and
    cached; (spectrum, hit)."""
    key = config_key("spectrum", art.key, art.content_hash)
    built = False

    def build(tmp: Path) -> None:
        nonlocal built
        built = True
        save_file(decompose(art.kae.koopman.G, art.kae.koopman.k).state_dict(), str(tmp / "decomposition.safetensors"))

    def load(path: Path) -> Spectrum:
        return Spectrum.from_state_dict(load_file(str(path / "decomposition.safetensors")))

    manifest = {"kae": art.key, "kae_content": art.content_hash}
    spec = ArtifactCache(cfg.paths.cache_dir).load("spectrum", key, build, load, manifest)
    return spec, not built


@torch.no_grad()
def observables(kae, x: torch.Tensor, batch_size: int = 16384) -> torch.Tensor:
    """phi(x) of preprocessed inputs, float64."""
    kae.eval()
    return torch.cat([kae.encoder(xb) for xb in x.split(batch_size)]).double()


def spectrum_report(spec: Spectrum, K: torch.Tensor, z: torch.Tensor, labels: torch.Tensor, n_cls: int):
    """Metrics of the decomposition, the class x mode energy table [C, p] and each mode's eta^2."""
    eig_K, eig_A = spec.eig_K, spec.eig_A
    energy = class_mode_energy(spec, z, labels, n_cls)  # class means: all samples
    if len(z) > MAX_SAMPLES:
        idx = torch.randperm(len(z), generator=torch.Generator().manual_seed(0))[:MAX_SAMPLES]
        z, labels = z[idx], labels[idx]
    stats = modal_stats(spec, z, labels, n_cls)
    sep = mode_separation(stats)
    m: dict[str, Any] = {
        "spectrum/radius_K": eig_K.abs().max().item(),
        "spectrum/radius_A": eig_A.abs().max().item(),
        "spectrum/n_outside_unit_circle": int((eig_K.abs() > 1 + 1e-9).sum()),
        "spectrum/n_modes": len(eig_K),
        "spectrum/cond_V": spec.cond(),
        "spectrum/effective_rank": effective_rank(K),
        "spectrum/effective_rank_A": effective_rank(spec.operator(eig_A)),
        "spectrum/reconstruction_rel_err": (
            torch.linalg.matrix_norm(spec.operator() - K) / torch.linalg.matrix_norm(K)
        ).item(),
    }
    order = torch.argsort(sep, descending=True)[:TOP]
    m["spectrum/separating_modes"] = order.tolist()
    m["spectrum/separating_eta2"] = sep[order].tolist()
    m["spectrum/class_top_modes"] = [
        torch.argsort(class_mode_specificity(stats, [c]), descending=True)[:TOP].tolist() for c in range(n_cls)
    ]
    m["spectrum/class_top_energy_modes"] = [
        torch.argsort(energy[c], descending=True)[:TOP].tolist() for c in range(n_cls)
    ]
    return m, energy, sep


def write_class_mode_table(path: Path, spec: Spectrum, energy: torch.Tensor, sep: torch.Tensor) -> Path:
    """The class x mode energy table as CSV: one row per mode (eigenvalue of K, eta^2, class shares)."""
    eig_K = spec.eig_K
    header = ["mode", "eig_K_real", "eig_K_imag", "abs_eig_K", "eta2", *[f"class_{c}" for c in range(len(energy))]]
    rows = [
        [r, eig_K[r].real.item(), eig_K[r].imag.item(), eig_K[r].abs().item(), sep[r].item(), *energy[:, r].tolist()]
        for r in range(energy.shape[1])
    ]
    return write_csv(path, header, rows)


def spectrum_figures(name: str, spec: Spectrum, energy: torch.Tensor, out: Path, class_names=None) -> dict[str, Path]:
    """The eigenvalues of K and A in the complex plane, and the class x mode energy heatmap."""
    from kaelab.viz.spectrum import plot_class_mode_energy, plot_operator_eigenvalues

    eig_K, eig_A = spec.eig_K.numpy(), spec.eig_A.numpy()
    out.mkdir(parents=True, exist_ok=True)
    figs = {
        "spectrum/eigenvalues": plot_operator_eigenvalues(
            eig_K, eig_A, spec.k, out / "eigenvalues.png", f"{name}: spectrum of the KAE operator"
        )
    }
    shown = torch.argsort(energy.max(0).values, descending=True)[:HEATMAP_MODES].sort().values.tolist()
    title = f"{name}: class mean observable phi(x_i) per mode\n(train split; {len(shown)} of {len(eig_K)} modes)"
    figs["spectrum/class_mode_energy"] = plot_class_mode_energy(
        energy[:, shown].numpy(), shown, eig_K, out / "class_mode_energy.png", title, class_names
    )
    return figs


def log_spectrum(cfg: DictConfig, run_dir: Path, m: dict[str, Any], figs: dict[str, Path]) -> None:
    from kaelab.viz.log import log_images

    loggers = build_loggers(cfg.logger, run_dir, cfg.name)
    log_images(loggers, figs)
    log_metrics_to(loggers, m)


def spectrum_task(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Reads the KAE's groups upstream; writes ``spectrum/*``, the class x mode table and two figures."""
    from kaelab.koopman.pipeline import trained_kae

    base, data, art = trained_kae(cfg, run_dir)
    t0 = time.perf_counter()
    spec, hit = cached_spectrum(cfg, art)
    t_decomp = time.perf_counter() - t0
    K = torch.linalg.matrix_exp(art.kae.koopman.G.detach().double())
    z = observables(art.kae, art.prep.transform_source(data.reps["train"][art.source]))  # training split
    m, energy, sep = spectrum_report(spec, K, z, data.labels["train"], data.num_classes)
    m["spectrum/table_time_s"] = time.perf_counter() - t0 - t_decomp
    m.update({"spectrum/decompose_time_s": t_decomp, "spectrum/time_s": time.perf_counter() - t0})
    m.update({"spectrum/cache_hit": hit, "kae/key": art.key, "kae/cache_hit": art.cache_hit})
    write_metrics(run_dir / "metrics.json", m)  # first: an output below that fails loses no result
    out = run_dir / "spectrum"
    table = out / "class_mode_energy.csv"
    optional_output(m, "spectrum", str(table), lambda: write_class_mode_table(table, spec, energy, sep))
    names = getattr(base.datamodule, "class_names", None)
    figs = optional_output(m, "spectrum", f"{out}/*.png", lambda: spectrum_figures(cfg.name, spec, energy, out, names))
    m.update({f"{k}_figure": str(v) for k, v in (figs or {}).items()})
    optional_output(m, "spectrum", "the run's loggers", lambda: log_spectrum(cfg, run_dir, m, figs or {}))
    log.info(
        "spectrum: radius K %.4g, A %.4g, %d of %d outside the unit circle, cond(V) %.3g, effective rank %.2f, %.2f s",
        m["spectrum/radius_K"], m["spectrum/radius_A"], m["spectrum/n_outside_unit_circle"], m["spectrum/n_modes"],
        m["spectrum/cond_V"], m["spectrum/effective_rank"], m["spectrum/time_s"],
    )  # fmt: skip
    return m
