"""The GPU path's logic, tested on the CPU (CI has no GPU): the card's precision, pinned batches,
non-blocking transfers, TF32 outside the fp32 islands, and the prepared GPU script end to end."""

import json
import sys
from types import SimpleNamespace

import pytest
import torch

from conftest import FAST, REPO
from kaelab.data.tensor_data import InMemoryDataModule, ShuffledBatches, TensorBatches, gather, wants_pinned_memory
from kaelab.koopman.operator import KoopmanOperator
from kaelab.precision import configure_matmul, fp32


@pytest.fixture
def gpu_script(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    sys.modules.pop("gpu_mnist_kae", None)
    import gpu_mnist_kae

    return gpu_mnist_kae


@pytest.mark.parametrize(
    "capability, bf16, want",
    [
        ((9, 0), True, ("bf16-mixed", False)),  # H100 / H200
        ((8, 0), True, ("bf16-mixed", False)),  # A100
        ((8, 6), False, ("32-true", True)),  # an Ampere card reporting no bf16: TF32
        ((7, 5), False, ("32-true", False)),  # Turing: neither
        (None, False, ("32-true", False)),  # no card
    ],
)
def test_the_card_decides_the_precision(gpu_script, capability, bf16, want):
    assert gpu_script.card_precision(capability, bf16) == want


def test_the_gpu_command_uses_one_gpu_and_a_fresh_cache(gpu_script, tmp_path):
    cmd = gpu_script.command("gpu", "bf16-mixed", tmp_path, ["kae.epochs=2"])
    assert cmd[1:4] == ["-m", "kaelab", "+experiment=mnist_kae"]
    assert {"trainer=gpu", "trainer.devices=1", "trainer.precision=bf16-mixed", "kae.epochs=2"} <= set(cmd)
    assert f"paths.cache_dir={tmp_path / 'cache'}" in cmd and f"hydra.run.dir={tmp_path / 'run'}" in cmd


def test_the_gpu_script_runs_the_job_end_to_end_on_the_cpu(gpu_script, tmp_path, data_dir, monkeypatch, capsys):
    """The same script on the CPU and a smoke-sized job: it times the run from an empty cache and
    reports the metrics the run wrote (catches a wrong metrics path or key)."""
    monkeypatch.setenv("KAELAB_DATA_DIR", str(data_dir))
    result = gpu_script.main(
        ["--accelerator", "cpu", "--out", str(tmp_path), "trainer.fast_dev_run=true", *FAST, "trainer.num_threads=1"]
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert result["kae/test_acc"] == metrics["kae/test_acc"] and 0 <= result["kae/test_acc"] <= 1
    assert result["wall_s"] > 0 and (tmp_path / "cache").is_dir()
    assert json.loads((tmp_path / "gpu_mnist_kae.json").read_text()) == result
    assert "s end to end on cpu" in capsys.readouterr().out


def test_batches_are_gathered_like_indexing_and_pinned_only_for_a_cuda_trainer(monkeypatch):
    t = torch.arange(40.0).reshape(20, 2)
    idx = torch.tensor([3, 0, 7])
    assert torch.equal(gather(t, idx), t[idx])
    cuda_trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    cpu_trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert wants_pinned_memory(cuda_trainer) and not wants_pinned_memory(cpu_trainer)
    assert not wants_pinned_memory(None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not wants_pinned_memory(cuda_trainer)
    # the pinned branch asks for page-locked memory and fills it with the same rows
    asked = {}

    def fake_empty(*shape, **kw):
        asked.update(kw)
        return torch.zeros(*shape, dtype=kw["dtype"])

    monkeypatch.setattr(torch, "empty", fake_empty)
    batches = TensorBatches((t,), ShuffledBatches(20, 5, shuffle=False), pin_memory=True)
    first = next(iter(batches))[0]
    assert asked.get("pin_memory") is True and torch.equal(first, t[:5])


def test_batches_move_to_another_device_non_blocking(monkeypatch):
    """A batch on the CPU is copied to the training device (``meta`` stands in for a GPU) with
    ``non_blocking=True``; a batch already there is returned as is."""
    dm = InMemoryDataModule({"train": (torch.randn(8, 2), torch.zeros(8))}, batch_size=4)
    calls = []
    to = torch.Tensor.to

    def spy(self, *args, **kw):
        calls.append(kw.get("non_blocking"))
        return to(self, *args, **kw)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    batch = (torch.randn(4, 2), torch.zeros(4))
    moved = dm.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert all(t.device.type == "meta" for t in moved) and calls == [True, True]
    assert dm.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch


def test_tf32_is_set_by_the_environment_and_held_off_inside_fp32_islands():
    """``$KAELAB_TF32=1`` lowers float32 products to TF32 ("high"), but the operator's matrix
    exponential (an fp32 island) runs at full precision: catches TF32 leaking into the operator."""
    before = torch.get_float32_matmul_precision()
    try:
        assert configure_matmul({"KAELAB_TF32": "1"}) == "high" == torch.get_float32_matmul_precision()
        seen = []
        with fp32():
            seen.append(torch.get_float32_matmul_precision())
        assert seen == ["highest"] and torch.get_float32_matmul_precision() == "high"
        op = KoopmanOperator(6, k=3)
        with torch.no_grad():
            op.G.copy_(0.3 * torch.randn(6, 6))
        with fp32():
            want = torch.linalg.matrix_exp(op.G.double()).float()
        assert torch.allclose(op.matrix().detach(), want, atol=1e-5)
        assert configure_matmul({}) == "highest"
    finally:
        torch.set_float32_matmul_precision(before)
