"""Mixed precision (kaelab.precision): ``auto`` follows the hardware, the resolved value keys the
cache, the numerically delicate parts stay fp32 under bf16 autocast, and bf16 training is seeded.
Each test names the wrong implementation it catches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import kaelab as kl
from conftest import YY_SMALL_KAE, compose_cfg, run_cfg
from kaelab import precision as P
from kaelab.koopman.kae import pairwise_distance_mse
from kaelab.koopman.operator import KoopmanOperator


def test_cpu_bf16_is_read_from_the_cpu_flags(tmp_path):
    """Catches bf16 assumed (or refused) whatever the CPU: only AVX512-BF16 / AMX-BF16 count."""
    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("processor : 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile\n")
    without.write_text("processor : 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert P.cpu_has_bf16(str(with_bf16)) and not P.cpu_has_bf16(str(without))
    assert not P.cpu_has_bf16(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("accelerator", "cpu", "cuda", "cuda_bf16", "want"),
    [
        ("cpu", True, False, False, "bf16-mixed"),
        ("cpu", False, False, False, "32-true"),
        ("gpu", False, True, True, "bf16-mixed"),  # the GPU branch, tested on the CPU
        ("gpu", True, True, False, "32-true"),  # a GPU without bf16 (e.g. a V100) on a bf16 CPU host
        ("auto", False, True, True, "bf16-mixed"),
    ],
)
def test_auto_resolves_by_the_device_that_trains(monkeypatch, accelerator, cpu, cuda, cuda_bf16, want):
    """Catches the CPU's answer used for a GPU run (or the reverse)."""
    monkeypatch.setattr(P, "cpu_has_bf16", lambda: cpu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    assert P.resolve_precision("auto", accelerator) == want
    assert P.resolve_precision("32-true", accelerator) == "32-true"


def test_the_cache_key_holds_the_resolved_precision(tmp_path, monkeypatch):
    """``auto`` keys the model it trains: the fp32 key on a CPU without bf16, the bf16 key with it.
    Catches the literal "auto" in the key (a bf16 model served to an fp32 machine and back)."""
    from kaelab.base_model import base_model_key

    key = {p: base_model_key(compose_cfg(["+experiment=yinyang_mlp", f"trainer.precision={p}"], tmp_path))
           for p in ("32-true", "bf16-mixed")}  # fmt: skip
    for has_bf16, want in ((False, "32-true"), (True, "bf16-mixed")):
        monkeypatch.setattr(P, "cpu_has_bf16", lambda has_bf16=has_bf16: has_bf16)
        auto = compose_cfg(["+experiment=yinyang_mlp", "trainer.precision=auto"], tmp_path)
        assert base_model_key(auto) == key[want]
    assert key["32-true"] != key["bf16-mixed"]


def test_the_operator_and_the_distances_stay_fp32_under_bf16_autocast():
    """K = exp(G), its powers and the isometry loss's distances are computed in fp32 even inside a
    bf16 autocast region, and equal their values outside it. Catches an expm (or pdist) left to
    autocast: bf16 matrix products in the exponential (or a crash: pdist has no bf16 kernel)."""
    torch.manual_seed(0)
    op = KoopmanOperator(16, k=5, init="random")
    a, b = torch.randn(40, 16), torch.randn(40, 3)
    ref = (op.matrix(), op.step_matrix(), op.inverse_matrix(), op.powers([2, 5])[1], pairwise_distance_mse(a, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = (op.matrix(), op.step_matrix(), op.inverse_matrix(), op.powers([2, 5])[1], pairwise_distance_mse(a, b))
        z = op.advance(torch.randn(8, 16), [2, 5])
    for r, g in zip(ref, got, strict=True):
        assert g.dtype == torch.float32 and torch.equal(r, g)
    assert z[0].dtype == torch.bfloat16  # applying the operator follows the training precision


def test_bf16_training_is_seeded_and_is_not_fp32(tmp_path):
    """The same seed twice at bf16-mixed gives the same weights, and other weights than fp32
    (the setting reaches the trainer). Catches a precision setting silently ignored."""
    g = torch.Generator().manual_seed(0)
    x_i = torch.randn(256, 6, generator=g)
    x_j = torch.tanh(x_i @ torch.randn(6, 6, generator=g))

    def fit(precision):
        kae = kl.KAE(k=4, hidden=[16], latent_dim=8, epochs=3, batch_size=64, precision=precision)
        return kae.fit(x_i, x_j).module_.state_dict()

    a, b, c = fit("bf16-mixed"), fit("bf16-mixed"), fit("32-true")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_a_bf16_kae_stage_runs_end_to_end_and_scores_in_fp32(tmp_path):
    """The base model and the KAE train at bf16-mixed; the surrogate is scored in fp32 and stays
    within a few points of the fp32 run's on the same small setting. Catches bf16 leaking into
    evaluation or a crash in a bf16 loss term."""
    base = ["+experiment=yinyang_kae", *YY_SMALL_KAE, "kae.path.lam=1"]
    bf16 = run_cfg([*base, "trainer.precision=bf16-mixed"], tmp_path / "bf16")
    fp32 = run_cfg(base, tmp_path / "fp32")
    assert bf16["kae/key"] != fp32["kae/key"]
    assert bf16["kae/test_acc"] > 0.9 and abs(bf16["kae/test_acc"] - fp32["kae/test_acc"]) < 0.03
    assert Path(tmp_path / "bf16" / "run" / "metrics.json").exists()


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_the_base_model_trains_bit_identically_from_the_same_seed(tmp_path, precision):
    """Two base models trained from empty caches with the same seed have identical weights, at
    each precision; another seed gives other weights. Catches an unseeded bf16 path (a kernel or
    an augmentation drawing from the global generator) and a seed that never reaches training."""
    from kaelab.base_model import base_model

    tiny = ["+experiment=yinyang_mlp", "data.n_train=500", "data.n_val=100", "data.n_test=100", "model.epochs=2"]

    def weights(name: str, seed: int) -> dict[str, torch.Tensor]:
        cfg = compose_cfg([*tiny, f"trainer.precision={precision}", f"model.seed={seed}"], tmp_path / name)
        return base_model(cfg, tmp_path / name / "work").net.state_dict()

    a, b, c = weights("a", 0), weights("b", 0), weights("c", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
