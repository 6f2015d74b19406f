"""The public API (``import kaelab as kl``): what a notebook uses, on tensors in memory.

Each test names the wrong implementation it catches."""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import kaelab as kl
from conftest import YY_SMALL_KAE, compose_cfg, run_cfg

PAPER_REF = re.compile(r"\b(Eqs?\.|Sec\.|Algorithm|Figure|Table)\s*\d|App\.\s*[A-D]|Koopman layers paper|Gupta et al\.")


def test_import_is_light_and_lists_the_api():
    """``import kaelab`` must not import torch (``python -m kaelab`` checks a config before the
    heavy imports), yet ``help(kaelab)`` must list every public name. Catches: eager imports in
    ``kaelab/__init__.py``; a name in ``__all__`` that does not resolve."""
    code = "import sys, kaelab; assert 'torch' not in sys.modules, 'torch imported'; print(len(kaelab.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(kl.__all__) >= 20
    text = subprocess.run(
        [sys.executable, "-c", "import kaelab, pydoc; print(pydoc.render_doc(kaelab, renderer=pydoc.plaintext))"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    missing = [name for name in kl.__all__ if not re.search(rf"\b{name}\b", text)]
    assert not missing, f"help(kaelab) does not list {missing}"


@pytest.mark.parametrize("name", kl.__all__)
def test_every_public_object_cites_the_paper_and_its_example_runs(name, tmp_path, monkeypatch):
    """Every public object has a docstring citing the paper (an equation, section or algorithm) and
    a runnable example, which is run here. Catches: an undocumented export; an example that no
    longer matches the API (a renamed argument, a changed shape)."""
    obj = getattr(kl, name)
    doc = obj.__doc__ or ""
    assert PAPER_REF.search(doc), f"kaelab.{name}'s docstring cites no equation, section or algorithm"
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs={})
    examples = [ex for t in tests for ex in t.examples]
    assert examples, f"kaelab.{name} has no runnable example (>>> lines) in its docstring"
    monkeypatch.chdir(tmp_path)  # an example must write nothing: checked below
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    for t in tests:
        runner.run(t)
    assert runner.failures == 0, f"kaelab.{name}'s example failed (see the output above)"
    assert list(tmp_path.iterdir()) == [], "an example wrote to the working directory"


def test_kaelab_ships_py_typed():
    assert (Path(kl.__file__).parent / "py.typed").is_file()


# --------------------------------------------------------------------------------------- the KAE
def _pairs(n=300, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_i = torch.randn(n, d, generator=g)
    x_j = torch.tanh(x_i @ torch.randn(d, d, generator=g))
    return x_i, x_j


def test_kae_fit_is_reproducible_and_the_seed_matters(tmp_path, monkeypatch):
    """Same seed, same weights; another seed, other weights; and a fit writes nothing to disk.
    Catches: the module built before seeding; the batch order not following the seed; Lightning
    left to write lightning_logs/ or checkpoints from a notebook."""
    monkeypatch.chdir(tmp_path)
    x_i, x_j = _pairs()
    fits = [kl.KAE(k=4, hidden=[8], latent_dim=6, epochs=3, batch_size=64, seed=s).fit(x_i, x_j) for s in (1, 1, 2)]
    sd = [f.module_.state_dict() for f in fits]
    assert all(torch.equal(sd[0][k], sd[1][k]) for k in sd[0])
    assert not all(torch.equal(sd[0][k], sd[2][k]) for k in sd[0])
    assert list(tmp_path.iterdir()) == []
    assert len(fits[0].history_) == 3 and fits[0].history_[-1]["train/loss"] < fits[0].history_[0]["train/loss"]


def test_kae_predict_is_eq2_with_its_operator_and_steps_end_at_the_prediction():
    """predict = phi^-1(K phi(x_i)) with K = exp(G) (Eqs. 2, 12), and the k-th decoded step equals
    it. Catches: K = exp(G/k) used for the k-step prediction; steps off by one; the decoded steps
    not starting at phi^-1(phi(x_i))."""
    x_i, x_j = _pairs()
    kae = kl.KAE(k=5, hidden=[8], latent_dim=6, epochs=2, batch_size=64).fit(x_i, x_j)
    m = kae.module_
    with torch.no_grad():
        want = m.decoder(m.encoder(x_i) @ torch.linalg.matrix_exp(m.koopman.G).T)
        recon = m.decoder(m.encoder(x_i))
    assert torch.allclose(kae.predict(x_i), want, atol=1e-5)
    steps = kae.decoded_steps(x_i)
    assert steps.shape == (6, *x_i.shape)
    assert torch.allclose(steps[-1], want, atol=1e-4) and torch.allclose(steps[0], recon, atol=1e-6)
    assert torch.allclose(kae.decoded_steps(x_i, [5, 2])[1], steps[2], atol=1e-5)


def test_with_operator_returns_a_new_kae_and_leaves_the_old_one(tmp_path):
    """An edited copy predicts with its own operator; the original and a saved-and-loaded copy
    still predict with exp(G). Catches: the edit written into the shared module or operator."""
    x_i, x_j = _pairs()
    kae = kl.KAE(k=3, hidden=[8], latent_dim=6, epochs=1, batch_size=64).fit(x_i, x_j)
    before = kae.predict(x_i)
    edited = kae.with_operator(torch.zeros(6, 6))
    assert not torch.allclose(edited.predict(x_i), before)
    assert torch.equal(kae.predict(x_i), before) and not kae.edited
    with pytest.raises(ValueError, match="edited"):
        edited.decoded_steps(x_i)
    loaded = kl.KAE.load(kae.save(tmp_path / "kae"))
    assert torch.equal(loaded.predict(x_i), before)


def test_kae_rejects_bad_input_in_one_line():
    with pytest.raises(kl.KAE.__init__.__globals__["ConfigError"], match="unknown hyper-parameters"):
        kl.KAE(latent=3)
    with pytest.raises(Exception, match="one shape"):
        kl.KAE(epochs=1).fit(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(Exception, match="epochs"):
        kl.KAE(epochs=0)


# ------------------------------------------------------------------------------ the stage is the API
def test_the_kae_stage_is_the_public_api_with_a_cache(tmp_path, data_dir):
    """The ``task=kae`` stage's cached KAE equals ``PairPreprocessor`` + ``KAE.fit`` called by hand
    on the training split's representations, bit for bit, and its surrogate accuracy equals
    ``surrogate_report``'s. Catches: the stage fitting the preprocessing on another split, training
    on other pairs or another seed than the API would, or scoring another way."""
    over = ["+experiment=yinyang_kae", *YY_SMALL_KAE, "kae.epochs=20", "kae.path.report=false"]
    metrics = run_cfg(over, tmp_path)
    cfg = compose_cfg(over, tmp_path)
    from kaelab.base_model import base_model
    from kaelab.koopman.pipeline import kae_estimator, load_kae

    base = base_model(cfg, tmp_path / "b")
    dm = base.datamodule
    x_tr, (x_te, y_te) = dm.tensors("train")[0], dm.tensors("test")[:2]
    src, tgt = metrics["kae/source_layer"], metrics["kae/target_layer"]
    reps = kl.extract(base.trajectory, x_tr, [src, tgt])
    prep = kl.PairPreprocessor(cfg.kae.q, cfg.kae.scale).fit(reps[src], reps[tgt])
    val = kl.extract(base.trajectory, dm.tensors("val")[0], [src, tgt])
    by_hand = kae_estimator(cfg.kae)
    by_hand.fit(*prep.transform(reps[src], reps[tgt]), val=prep.transform(val[src], val[tgt]))
    stage = load_kae(Path(cfg.paths.cache_dir) / "kae" / metrics["kae/key"], src, tgt, metrics["kae/key"])
    sd_stage, sd_hand = stage.kae.state_dict(), by_hand.module_.state_dict()
    assert all(torch.equal(sd_stage[k], sd_hand[k]) for k in sd_stage)
    report = kl.surrogate_report(base.trajectory, prep, by_hand, x_te, y_te, source=src, target=tgt)
    assert report["kae/test_acc"] == metrics["kae/test_acc"] and report["kae/agreement"] == metrics["kae/agreement"]


# ---------------------------------------------------------------------- any network, from a notebook
class TinyNet(nn.Module):
    """A network kaelab has never seen: no trajectory_spec(), names of its own."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(2, 12)
        self.mid = nn.Sequential(nn.Tanh(), nn.Linear(12, 12), nn.Tanh())
        self.top = nn.Linear(12, 12)
        self.out = nn.Linear(12, 3)

    def forward(self, x):
        return self.out(torch.relu(self.top(self.mid(self.stem(x)))))


def test_trajectory_of_a_users_network_must_reproduce_its_forward():
    """Catches: a trajectory that silently drops a module of the forward (here the ReLU after
    ``top`` is not a module, so naming ``top`` as a stage does not reproduce the network)."""
    net = TinyNet()
    with pytest.raises(Exception, match="does not reproduce"):
        kl.trajectory(net, torch.randn(4, 2), stages=["stem", "mid", "top"], head="out")
    seq = nn.Sequential(nn.Linear(2, 12), nn.Tanh(), nn.Linear(12, 3))
    traj = kl.trajectory(seq, torch.randn(4, 2), stages=["0", "1"], head="2")
    x = torch.randn(7, 2)
    assert torch.allclose(traj(x), seq(x))
    assert torch.allclose(traj.forward_from("0", kl.extract(traj, x)["0"]), seq(x))


def test_emmet_edit_forgets_a_class_and_keeps_the_rest():
    """Algorithm 1 through the API on a small 3-class problem: the surrogate's accuracy on the
    forgotten class drops to (near) zero, the others stay. Catches: the edit applied to the wrong
    class, or leaving the operator unchanged (the returned KAE predicting with exp(G))."""
    torch.manual_seed(0)
    y = torch.randint(0, 3, (600,))
    centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    x = centres[y] + 0.3 * torch.randn(600, 2)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    traj = kl.trajectory(net, x[:4], stages=["0", "1", "2", "3"], head="4")
    reps = kl.extract(traj, x)
    prep = kl.PairPreprocessor().fit(reps["1"], reps["3"])
    x_i, x_j = prep.transform(reps["1"], reps["3"])
    kae = kl.KAE(k=4, hidden=[32], latent_dim=24, lr=1e-2, epochs=60, batch_size=100).fit(x_i, x_j)
    before = kl.surrogate_report(traj, prep, kae, x, y, source="1", target="3")
    edited = kl.emmet_edit(kae, x_i, x_j, y, forget=[2])
    after = kl.surrogate_report(traj, prep, edited, x, y, source="1", target="3")
    assert before["kae/test_acc_per_class"][2] > 0.9
    assert after["kae/test_acc_per_class"][2] < 0.1
    assert min(after["kae/test_acc_per_class"][:2]) > 0.85
    assert kl.surrogate_report(traj, prep, kae, x, y, source="1", target="3") == before  # kae itself unchanged


# -------------------------------------------------------------------------------- the quickstart
def test_the_quickstart_notebook_runs_end_to_end(tmp_path, data_dir):
    """``examples/quickstart.py`` on a small slice of MNIST: it runs as a script and prints each
    step's headline; its figure is written."""
    env = {**os.environ, "KAELAB_DATA_DIR": str(data_dir), "QUICKSTART_SAMPLES": "3000", "QUICKSTART_EPOCHS": "3",
           "QUICKSTART_OUT": str(tmp_path)}  # fmt: skip
    script = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    out = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    for line in ("network: test accuracy", "surrogate", "digit 4:", "beta_0 at eps="):
        assert line in out.stdout, f"quickstart printed no {line!r}:\n{out.stdout}"
    assert (tmp_path / "quickstart_betti0.png").stat().st_size > 10_000
