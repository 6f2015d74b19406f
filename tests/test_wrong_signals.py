"""The signal handling of ``python -m kaelab`` (kaelab/__main__.py) in-process, without a run
(tests/test_crash.py sends real signals to real runs): what each signal does, the exit code, the
one-line message and its resume command.

Wrong implementations these catch: an exit code other than 128 + the signal; a resume command that
repeats the old ``ckpt_path`` / ``hydra.run.dir`` beside the new ones; a second SIGTERM inside a fit
deferred like the first (a long epoch cannot be stopped at once); SIGINT swallowed by the handler;
the signal not recorded (a traceback instead of the message); the way out left interruptible.
"""

from __future__ import annotations

import signal

import pytest

import kaelab.__main__ as cli


@pytest.fixture(autouse=True)
def restore_signals():
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    state = dict(cli._STATE)
    cli._STATE.update(signal=None, run_dir=None, task=None, overrides=[])
    yield
    cli._STATE.clear()
    cli._STATE.update(state)
    for s, h in handlers.items():
        signal.signal(s, h)


def test_sigint_raises_keyboard_interrupt_and_is_recorded():
    with pytest.raises(KeyboardInterrupt):
        cli._on_signal(signal.SIGINT, None)
    assert cli._STATE["signal"] == signal.SIGINT


def test_first_sigterm_inside_a_fit_waits_for_the_epoch_a_second_stops_at_once():
    signal.signal(signal.SIGTERM, lambda *a: None)  # inside a fit: Lightning's handler, which calls ours
    assert cli._on_signal(signal.SIGTERM, None) is None
    assert cli._STATE["signal"] == signal.SIGTERM
    with pytest.raises(cli.Terminated):
        cli._on_signal(signal.SIGTERM, None)


def test_sigterm_outside_a_fit_stops_at_once():
    signal.signal(signal.SIGTERM, cli._on_signal)
    with pytest.raises(cli.Terminated):
        cli._on_signal(signal.SIGTERM, None)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_main_exits_128_plus_the_signal_with_one_line_and_ignores_further_signals(
    sig, code, tmp_path, monkeypatch, capsys
):
    def hydra_main():
        cli._STATE.update(run_dir=tmp_path, task="kae", overrides=["+experiment=yinyang_kae"])
        signal.getsignal(sig)(sig, None)  # the handler main() installed

    monkeypatch.setattr(cli, "_hydra_main", hydra_main)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"kaelab: stopped by {signal.Signals(sig).name}; no metrics.json")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN and signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_resume_command_replaces_the_old_checkpoint_and_run_dir(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"x")
    overrides = ["+experiment=yinyang_mlp", "ckpt_path=/old/last.ckpt", "hydra.run.dir=/old", "model.epochs=3"]
    msg = cli.interrupt_message(signal.SIGTERM, tmp_path, "train", overrides)
    cmd = msg.split("resume with: ", 1)[1].split()
    assert cmd[:3] == ["python", "-m", "kaelab"]
    assert [c for c in cmd if c.startswith("ckpt_path=")] == [f"ckpt_path={last}"]
    assert [c for c in cmd if c.startswith("hydra.run.dir=")] == [f"hydra.run.dir={tmp_path}"]
    assert "+experiment=yinyang_mlp" in cmd and "model.epochs=3" in cmd
