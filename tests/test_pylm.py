"""The byte-level language-model example (scripts/examples/pylm.py, pylm_data.py, +experiment=pylm):
a causal transformer read as a trajectory, the stdlib corpus split by file, next-byte windows, the
excluded targets of the retrain baseline, and the classifier's loss and metrics over sequence
positions."""

from __future__ import annotations

import hashlib
import json
import math

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import FAST, REPO, compose_cfg

SEARCH = f"hydra.searchpath=[file://{REPO / 'scripts' / 'examples' / 'conf'}]"
SMALL_NET = dict(vocab_size=256, context=32, dim=32, depth=3, heads=4, mlp_ratio=2)


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # scripts.examples.* as `python -m kaelab` from the repo root


def small_lm(seed: int = 0):
    from scripts.examples.pylm import PyLM

    torch.manual_seed(seed)
    return PyLM(**SMALL_NET).eval()


def fake_stdlib(root, n: int = 60):
    """A library of ``n`` small modules (distinct contents), plus files the corpus must leave out."""
    for i in range(n):
        path = root / ("pkg" if i % 3 else "") / f"mod{i:02d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"def f{i}(x):\n    return x * {i} + {i * i}  # module {i}\n" * (5 + i % 7))
    for excluded in ("test/test_x.py", "tests/a.py", "idlelib/b.py", "site-packages/c.py", "pkg/test_d.py"):
        (root / excluded).parent.mkdir(parents=True, exist_ok=True)
        (root / excluded).write_text("left_out = True\n" * 50)
    return root


def datamodule(root, **kw):
    from scripts.examples.pylm_data import PyStdlibDataModule

    kw = {"context": 16, "val_percent": 20, "test_percent": 20, **kw}
    dm = PyStdlibDataModule(root=str(root), **kw)
    dm.setup()
    return dm


# ----------------------------------------------------------------------------------------------- model
def test_logits_at_a_position_never_see_later_tokens():
    """Changing token t changes no logit before t (causal attention), and does change those at t."""
    net = small_lm()
    x = torch.randint(0, 256, (2, 32))
    t = 11
    changed = x.clone()
    changed[:, t] = (x[:, t] + 1) % 256
    with torch.no_grad():
        a, b = net(x), net(changed)
    assert a.shape == (2, 32, 256)
    assert torch.allclose(a[:, :t], b[:, :t], atol=1e-6)
    assert (a[:, t:] - b[:, t:]).abs().amax(-1).min() > 1e-4  # every later position reads token t


def test_the_trajectory_chain_reproduces_the_forward_pass():
    """kaelab reads the LM as embed -> blocks.0..blocks.2 -> head, the chain the config names."""
    import kaelab as kl

    net = small_lm()
    x = torch.randint(0, 256, (3, 32))
    traj = kl.trajectory(net, x[:2], stages=["embed", "blocks.*"], head="head")
    assert traj.names == ["embed", "blocks.0", "blocks.1", "blocks.2"]
    assert traj.shapes == [(32, 32)] * 4  # (positions, dim) per state
    with torch.no_grad():
        direct = net(x)
        states = traj.states(x)
        assert torch.allclose(traj(x).reshape(direct.shape), direct, atol=1e-5)
        assert torch.allclose(net.head(states[-1].reshape(3, 32, 32)), direct, atol=1e-5)


def test_generation_continues_the_prompt_and_is_seeded():
    net = small_lm()
    a = net.generate(b"def ", 20, seed=3)
    assert a.startswith(b"def ") and len(a) == 24
    assert a == net.generate(b"def ", 20, seed=3)
    assert a != net.generate(b"def ", 20, seed=4)
    assert len(net.generate(b"x" * 40, 5, temperature=0)) == 45  # a prompt longer than the context
    assert net.training is False


# ------------------------------------------------------------------------------------------------ data
def test_every_file_lies_in_one_split_and_each_split_is_its_files(tmp_path):
    """Splits are by file: the three splits partition the selected files, each split's stream is
    exactly its own files' bytes, and tests, IDLE and installed packages are left out."""
    root = fake_stdlib(tmp_path)
    dm = datamodule(root)
    files = dm.files()
    by_split = {s: [rel for split, rel, _ in files if split == s] for s in ("train", "val", "test")}
    assert all(by_split.values())
    paths = [rel for _, rel, _ in files]
    assert sorted(paths) == paths and len(set(paths)) == len(paths) == 60
    assert not any(p.split("/")[0] in {"test", "tests", "idlelib", "site-packages"} or "test_" in p for p in paths)
    for split, rels in by_split.items():
        expected = b"".join((root / rel).read_bytes() for rel in sorted(rels))
        assert bytes(dm.stream(split).tolist()) == expected, split
    manifest = dm.manifest()
    assert manifest["files"] == 60
    assert manifest["bytes"] == {s: sum((root / r).stat().st_size for r in rels) for s, rels in by_split.items()}


def test_the_manifest_hash_names_the_selection_and_contents(tmp_path):
    root = fake_stdlib(tmp_path)
    first = datamodule(root).manifest()
    assert datamodule(root).manifest() == first  # the same selection: the same hash
    assert len(first["sha256"]) == 64
    fewer = datamodule(root, max_bytes=sum(first["bytes"].values()) // 2).manifest()
    assert fewer["files"] < first["files"] and fewer["sha256"] != first["sha256"]
    (root / "mod00.py").write_text("def f0(x):\n    return 1\n" * 5)
    assert datamodule(root).manifest()["sha256"] != first["sha256"]  # one file's contents changed


def test_the_real_stdlib_corpus_is_a_few_megabytes_and_hashes_stably():
    from scripts.examples.pylm_data import PyStdlibDataModule

    a, b = PyStdlibDataModule().manifest(), PyStdlibDataModule().manifest()
    assert a == b
    assert 1_000_000 < sum(a["bytes"].values()) <= 4_000_000 and a["files"] > 50
    assert min(a["bytes"].values()) > 50_000  # held-out files enough for a test set


def test_windows_are_the_next_byte_targets(tmp_path):
    """y is x shifted by one byte; training windows start every stride, val / test do not overlap."""
    dm = datamodule(fake_stdlib(tmp_path), train_stride=8)
    for split, stride in (("train", 8), ("val", 16), ("test", 16)):
        x, y = dm.tensors(split)
        s = dm.stream(split).long()
        assert x.dtype == y.dtype == torch.int64 and x.shape[1] == 16
        assert torch.equal(y[:, :-1], x[:, 1:])
        for i in (0, 1, len(x) - 1):
            assert torch.equal(x[i], s[i * stride : i * stride + 16]) and y[i, -1] == s[i * stride + 16]
        assert len(x) == (len(s) - 17) // stride + 1
    assert dm.num_classes == 256 and dm.in_dim == 16
    limited = datamodule(tmp_path, train_stride=8, limit=5)
    assert all(len(limited.tensors(s)[0]) == 5 for s in ("train", "val", "test"))
    assert torch.equal(limited.tensors("train")[0], dm.tensors("train")[0][:5])


def test_excluded_targets_are_ignored_in_training_only(tmp_path):
    """exclude_targets (and kaelab's exclude_classes) turn exactly those target bytes of train and
    val into -100; inputs and the test split stay whole."""
    root = fake_stdlib(tmp_path)
    whole = datamodule(root)
    space, e = ord(" "), ord("e")
    for kw in ({"exclude_targets": [space, e]}, {"exclude_classes": [space], "exclude_targets": [e]}):
        dm = datamodule(root, **kw)
        for split in ("train", "val"):
            (x0, y0), (x, y) = whole.tensors(split), dm.tensors(split)
            hit = (y0 == space) | (y0 == e)
            assert hit.any() and torch.equal(x, x0)
            assert torch.equal(y == -100, hit) and torch.equal(y[~hit], y0[~hit])
        assert torch.equal(dm.tensors("test")[1], whole.tensors("test")[1])


def test_bad_data_settings_are_one_line_errors(tmp_path):
    from kaelab.errors import ConfigError

    root = fake_stdlib(tmp_path)
    for where, kw, message in [(root, {"exclude_targets": [256]}, "not byte values"),
                               (tmp_path / "no", {}, "not a dir"), (root, {"context": 0}, "must be >= 1"),
                               (root, {"val_percent": 50, "test_percent": 50}, "leave files")]:  # fmt: skip
        with pytest.raises(ConfigError, match=message) as err:
            datamodule(where, **kw)
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ classifier
class GivenLogits(nn.Module):
    """The inputs are the logits (plus a parameter at 0, for the optimizer and the backward pass)."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.unused


class LossOfTheStep(L.Callback):
    def __init__(self, seen: list):
        self.seen = seen

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append(float(outputs["loss"]))


def _classifier(net: nn.Module):
    from kaelab.models import Classifier

    module = Classifier(dict(_target_="kaelab.models.MLP", in_dim=2, hidden=[2], out_dim=2),
                        dict(lr=0.1, momentum=0.9, weight_decay=0.0, warmup_frac=0.2), 256)  # fmt: skip
    module.net = net
    return module


def test_sequence_loss_and_metrics_are_over_positions_without_ignored_targets():
    """Logits [B, T, V]: the loss is the mean cross-entropy over the target positions that are not
    -100, and test/acc and test/nll count those positions alone."""
    torch.manual_seed(0)
    logits = torch.randn(6, 10, 256)
    y = torch.randint(0, 256, (6, 10))
    y[0, :4], y[3, 7:] = -100, -100
    y[1, 2] = int(logits[1, 2].argmax())  # at least one right guess
    keep = y != -100
    log_p = torch.log_softmax(logits, -1)
    nll = -log_p[keep].gather(1, y[keep].unsqueeze(1)).mean()
    acc = (logits[keep].argmax(-1) == y[keep]).double().mean()
    module = _classifier(GivenLogits())
    seen = []
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[LossOfTheStep(seen)])  # fmt: skip
    trainer.fit(module, DataLoader(TensorDataset(logits, y), batch_size=6))
    assert seen[0] == pytest.approx(nll.item(), rel=1e-5)  # the training step's loss
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, DataLoader(TensorDataset(logits, y), batch_size=4), verbose=False)
    assert module.test_results["test/nll"] == pytest.approx(nll.item(), rel=1e-5)
    assert module.test_results["test/acc"] == pytest.approx(acc.item(), abs=1e-6)


def test_classifiers_report_the_test_nll_too():
    torch.manual_seed(0)
    logits, y = torch.randn(20, 256), torch.randint(0, 256, (20,))
    module = _classifier(nn.Identity())
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, DataLoader(TensorDataset(logits, y), batch_size=8), verbose=False)
    expected = nn.functional.cross_entropy(logits, y).item()
    assert module.test_results["test/nll"] == pytest.approx(expected, rel=1e-5)


def test_a_network_must_give_logits_for_every_target_position(tmp_path):
    """Sequence targets [B, T] need logits [B, T, 256]: the LM passes the check before training, a
    network giving one row of logits per window is a one-line error naming the targets' shape."""
    from kaelab.base_model import check_fits_data
    from kaelab.errors import ConfigError
    from scripts.examples.pylm import PyLM

    dm = datamodule(fake_stdlib(tmp_path))
    check_fits_data(PyLM(context=16, dim=16, depth=1, heads=2, mlp_ratio=1), dm)
    per_window = nn.Sequential(nn.Embedding(256, 4), nn.Flatten(1), nn.Linear(64, 256))
    with pytest.raises(ConfigError, match=r"outputs shape \(256,\) per sample of targets \(16,\)"):
        check_fits_data(per_window, dm)


# ------------------------------------------------------------------------------------------ experiment
TINY = ["data.limit=48", "data.batch_size=16", "model.epochs=6", "model.net.context=32", "model.net.dim=32",
        "model.net.heads=4", "model.net.depth=3", "model.net.mlp_ratio=2", "callbacks.lm_report.n=24"]  # fmt: skip


def test_the_experiment_composes_and_names_a_trajectory(tmp_path):
    from omegaconf import OmegaConf

    from kaelab.config import check_values
    from kaelab.models import Trajectory, build_net

    cfg = compose_cfg([SEARCH, "+experiment=pylm"], tmp_path)
    check_values(cfg)
    assert cfg.task == "train" and cfg.data.context == cfg.model.net.context == 128
    net = build_net(OmegaConf.to_container(cfg.model.net, resolve=True))
    traj = Trajectory.of(net.eval(), torch.randint(0, 256, (2, 128)), OmegaConf.to_container(cfg.model.trajectory))
    assert traj.n_states == 5


def test_the_experiment_trains_end_to_end_on_a_tiny_slice(tmp_path):
    """+experiment=pylm trains, tests and reports: bits per byte = test/nll / ln 2, a sample after
    the prompt, the corpus manifest in metrics.json and its file list in the run dir."""
    from kaelab.pipeline import run

    cfg = compose_cfg([SEARCH, "+experiment=pylm", *TINY, *FAST], tmp_path)
    metrics = run(cfg)
    run_dir = tmp_path / "run"
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["lm/bits_per_byte"] == pytest.approx(saved["test/nll"] / math.log(2))
    assert saved["lm/bits_per_byte"] < 7.0  # 18 steps from 8 bits (uniform over bytes): byte frequencies learnt
    assert saved["lm/next_byte_acc"] == saved["test/acc"] and 0 < saved["test/acc"] <= 1
    assert saved["lm/sample"].startswith("def ") and len(saved["lm/sample"].encode("utf-8", "replace")) >= 24
    listed = (run_dir / "corpus_files.tsv").read_text().splitlines()
    assert len(listed) == saved["data/files"] == metrics["data/files"]
    assert {line.split("\t")[0] for line in listed} == {"train", "val", "test"}
    assert saved["data/bytes_test"] == sum(int(line.split("\t")[1]) for line in listed if line.startswith("test"))
    assert len(saved["data/sha256"]) == 64 and saved["train/steps"] == 18
    assert (run_dir / "model.ckpt").is_file()


def test_the_corpus_hash_covers_paths_and_contents(tmp_path):
    """The manifest's sha256 is that of (path, NUL, length, contents) of every file in order."""
    root = fake_stdlib(tmp_path)
    dm = datamodule(root)
    digest = hashlib.sha256()
    for _, rel, n in dm.files():
        digest.update(rel.encode() + b"\0" + n.to_bytes(8, "big") + (root / rel).read_bytes())
    assert dm.manifest()["sha256"] == digest.hexdigest()
