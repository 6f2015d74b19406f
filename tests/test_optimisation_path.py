"""The classifier's optimisation: Lightning's automatic loop with the papers' one-cycle LR stepped
per batch; clipping, accumulation, a user's scheduler and resuming come from Lightning."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import GradientAccumulationScheduler

from kaelab.data import InMemoryDataModule
from kaelab.data.tensor_data import ShuffledBatches
from kaelab.models import Classifier
from kaelab.models.classifier import decay_param_groups
from kaelab.schedules import triangular_lr

NET = {"_target_": "kaelab.models.ResMLP", "in_dim": 2, "width": 8, "n_blocks": 2, "out_dim": 3}
OPTIM = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, warmup_frac=0.3)
BATCH, N = 32, 32 * 6  # 6 steps per epoch


def _tensors() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 2, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


def _data() -> InMemoryDataModule:
    return InMemoryDataModule({"train": _tensors()}, batch_size=BATCH)


def _fit(epochs: int, ckpt_path=None, ckpt_dir=None, model=None, **trainer_kw):
    L.seed_everything(0)
    model = model or Classifier(NET, OPTIM, 3)
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


def _reference(epochs: int) -> torch.nn.Module:
    """The papers' recipe as a plain PyTorch loop: the same batches, zero_grad, backward, SGD step,
    then the one-cycle LR step, once per batch."""
    L.seed_everything(0)
    net = Classifier(NET, OPTIM, 3).net.train()
    opt = torch.optim.SGD(decay_param_groups(net, OPTIM["weight_decay"]), lr=OPTIM["lr"], momentum=OPTIM["momentum"])
    sched = triangular_lr(opt, epochs * N // BATCH, OPTIM["warmup_frac"])
    x, y = _tensors()
    batches = ShuffledBatches(N, BATCH, seed=0)
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        for idx in batches:
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net


def test_the_fit_trains_the_papers_recipe_bit_for_bit():
    """Catches a step that skips zero_grad (gradients accumulate), an LR schedule stepped per epoch,
    twice or before the optimizer, or weight decay on the wrong parameters."""
    model, trainer = _fit(3)
    assert trainer.global_step == 3 * 6
    assert _same_weights(model.net, _reference(3))
    L.seed_everything(0)
    assert not _same_weights(model.net, Classifier(NET, OPTIM, 3).net)  # the weights moved


@pytest.mark.parametrize(
    ("kw", "steps"),
    [
        (dict(gradient_clip_val=1e-3), 6),
        (dict(accumulate_grad_batches=2), 3),
        (dict(callbacks=[GradientAccumulationScheduler({0: 2})]), 3),
    ],
    ids=["clipping", "accumulation", "accumulation-callback"],
)
def test_clipping_and_accumulation_change_the_training(kw, steps):
    """Catches clipping or accumulation that is silently skipped (the weights of a plain fit)."""
    model, trainer = _fit(1, **kw)
    assert trainer.global_step == steps
    plain, _ = _fit(1)
    assert not _same_weights(model.net, plain.net)


def test_a_users_scheduler_runs_at_its_interval():
    """Catches a ``model.scheduler`` ignored (the built-in schedule runs) or stepped per batch."""
    sched = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 1, "gamma": 0.5}
    _, trainer = _fit(2, model=Classifier(NET, OPTIM, 3, scheduler=sched, scheduler_interval="epoch"))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(OPTIM["lr"] * 0.25)


class _StopAt(L.Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("pre-empted")


def test_a_checkpoint_resumes_with_its_step_count_and_weights(tmp_path):
    """Catches a resume that restarts the step count (the LR schedule and ``global_step`` start
    again) or loses the optimizer's momentum: the weights must equal an uninterrupted run's."""
    with pytest.raises(RuntimeError, match="pre-empted"):  # the LR schedule is planned for 4 epochs
        _fit(4, ckpt_dir=tmp_path, callbacks=[_StopAt(epoch=2)])
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    assert torch.load(ckpt, weights_only=True)["global_step"] == 12
    resumed, t_resumed = _fit(4, ckpt_path=str(ckpt))
    assert t_resumed.global_step == 4 * 6
    full, _ = _fit(4)
    assert _same_weights(resumed.net, full.net)


def test_the_in_memory_batch_transfer_shortcut_moves_what_is_not_on_the_device():
    """A batch of the in-memory datamodules already on the device skips Lightning's transfer walk.
    Catches a shortcut that returns a batch not on the device."""
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
