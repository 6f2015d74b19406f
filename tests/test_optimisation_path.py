"""The classifier's two optimisation paths: Lightning's manual optimisation for the papers' recipe
(the fast path) and its automatic loop for what only that loop supports. Both must train the
same weights, bit for bit."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import GradientAccumulationScheduler

from kaelab.data import InMemoryDataModule
from kaelab.models import Classifier

NET = dict(arch="resmlp", in_dim=2, width=8, n_blocks=2, out_dim=3)
OPTIM = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, warmup_frac=0.3)
BATCH, N = 32, 32 * 6  # 6 steps per epoch


def _data() -> InMemoryDataModule:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 2, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return InMemoryDataModule({"train": (x, y)}, batch_size=BATCH)


def _fit(epochs: int, automatic: bool | None = None, ckpt_path=None, ckpt_dir=None, model=None, **trainer_kw):
    L.seed_everything(0)
    model = model or Classifier(NET, OPTIM, 3)
    if automatic is not None:
        model.automatic_optimization = automatic
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=ckpt_dir is not None,
        default_root_dir=ckpt_dir,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **trainer_kw,
    )
    trainer.fit(model, datamodule=_data(), ckpt_path=ckpt_path)
    return model, trainer


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_fast_path_trains_the_automatic_loops_weights_bit_for_bit():
    """Catches a manual step that skips zero_grad (gradients accumulate), steps the LR schedule
    twice or not at all, or steps it before the optimizer."""
    manual, t_manual = _fit(3)
    auto, t_auto = _fit(3, automatic=True)
    assert not manual.automatic_optimization and auto.automatic_optimization
    assert t_manual.global_step == t_auto.global_step == 3 * 6
    lr = [t.optimizers[0].param_groups[0]["lr"] for t in (t_manual, t_auto)]
    assert lr[0] == lr[1] and lr[0] != OPTIM["lr"]  # the one-cycle schedule ran, equally
    assert _same_weights(manual.net, auto.net)
    # and the step is real: the weights moved from their initialisation
    L.seed_everything(0)
    assert not _same_weights(manual.net, Classifier(NET, OPTIM, 3).net)


@pytest.mark.parametrize(
    "kw",
    [
        dict(gradient_clip_val=0.5),
        dict(accumulate_grad_batches=2),
        dict(callbacks=[GradientAccumulationScheduler({0: 2})]),
    ],
    ids=["clipping", "accumulation", "accumulation-callback"],
)
def test_what_only_the_automatic_loop_supports_takes_it(kw):
    """Catches the manual path taken where Lightning refuses it (a MisconfigurationException) or
    would silently skip the clipping / accumulation."""
    model, trainer = _fit(1, **kw)
    assert model.automatic_optimization
    assert trainer.global_step == (6 if "gradient_clip_val" in kw else 3)


def test_a_users_scheduler_takes_the_automatic_loop():
    sched = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 1, "gamma": 0.5}
    model, trainer = _fit(2, model=Classifier(NET, OPTIM, 3, scheduler=sched, scheduler_interval="epoch"))
    assert model.automatic_optimization
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(OPTIM["lr"] * 0.25)


class _StopAt(L.Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("pre-empted")


@pytest.mark.parametrize("written_by", ["automatic", "manual"])
def test_a_checkpoint_resumes_on_the_other_path_and_keeps_counting(tmp_path, written_by):
    """A checkpoint counts its optimizer steps in the loop that wrote it (the automatic one, e.g.
    before the fast path existed), where the other loop does not look; resumed on the other path,
    global_step must go on from there, and the weights must equal an uninterrupted run's."""
    first = written_by == "automatic"
    with pytest.raises(RuntimeError, match="pre-empted"):  # the LR schedule is planned for 4 epochs
        _fit(4, automatic=first, ckpt_dir=tmp_path, callbacks=[_StopAt(epoch=2)])
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    assert torch.load(ckpt, weights_only=True)["global_step"] == 12
    resumed, t_resumed = _fit(4, automatic=not first, ckpt_path=str(ckpt))
    assert resumed.automatic_optimization is not first
    assert t_resumed.global_step == 4 * 6
    full, _ = _fit(4)
    assert _same_weights(resumed.net, full.net)


def test_the_hook_bookkeeping_shortcuts_change_nothing_else():
    """``_current_fx_name`` skips nn.Module's __setattr__, and a batch of the in-memory datamodules
    already on the device skips Lightning's transfer walk. Catches a shortcut that leaks to other
    attributes (a submodule or parameter set afterwards would not be registered) or that returns a
    batch not on the device."""
    model = Classifier(NET, OPTIM, 3)
    model._current_fx_name = "training_step"
    assert model._current_fx_name == "training_step" and "_current_fx_name" not in model._modules
    model.extra = torch.nn.Linear(2, 2)
    model.scale = torch.nn.Parameter(torch.ones(1))
    assert "extra" in model._modules and "scale" in model._parameters
    assert any(n == "scale" for n, _ in model.named_parameters())

    dm = _data()
    cpu = torch.device("cpu")
    batch = (torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    assert dm.transfer_batch_to_device(batch, cpu, 0) is batch
    as_list = [torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)]
    moved = dm.transfer_batch_to_device(as_list, torch.device("meta"), 0)
    assert all(t.device.type == "meta" for t in moved)  # the default path: moved to the device asked for
    tup_moved = dm.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert all(t.device.type == "meta" for t in tup_moved)


def test_a_classifier_fit_on_the_in_memory_data_warns_about_no_hook(recwarn):
    """The transfer shortcut lives in the datamodule: on the module, Lightning would warn in every
    run's log that the module overrides a hook while a datamodule is given."""
    _fit(1)
    assert not [w for w in recwarn if "transfer_batch_to_device" in str(w.message)]
