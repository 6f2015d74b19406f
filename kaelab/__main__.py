"""``python -m kaelab [+experiment=NAME] [key=value ...]``: compose the Hydra config and run it.

Exit codes: 0 done (metrics.json written); 2 a one-line ``kaelab: error: ...`` about the input
(in a sweep: any job that failed, for bad input or a crash, fails alone; the failed jobs are
listed once every job has run, and in ``<sweep dir>/sweep_summary.json``); 143 stopped by SIGTERM and 130 by
SIGINT, with one line saying where the last checkpoint is and how to resume.
"""

from __future__ import annotations

import logging
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from kaelab.config import register_configs
from kaelab.errors import ERROR_FILE, KaelabError

log = logging.getLogger("kaelab")
register_configs()


class Terminated(BaseException):
    """Raised by the SIGTERM handler outside a Lightning fit (not an Exception: nothing swallows it)."""


# what the interrupt message needs: the current job's run dir, task and overrides, and the signal
_STATE: dict[str, Any] = {"signal": None, "run_dir": None, "task": None, "overrides": []}


def _on_signal(signum: int, frame: Any) -> None:
    first = _STATE["signal"] is None
    _STATE["signal"] = signum
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    # inside a Lightning fit, Lightning's own handler (which calls this one) stops the fit at the end
    # of the epoch, once its checkpoint is written; a second SIGTERM, or one outside a fit, stops now
    if first and signal.getsignal(signal.SIGTERM) is not _on_signal:
        return
    raise Terminated


@hydra.main(version_base="1.3", config_path="pkg://kaelab.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    _STATE.update(run_dir=run_dir, task=OmegaConf.select(cfg, "task"), overrides=list(hc.overrides.task))
    t0 = time.perf_counter()
    try:
        from kaelab.pipeline import run  # checks the config first (once), then imports the heavy parts

        metrics = run(cfg)
        value = optimized_value(cfg, metrics)
    except Exception as err:
        is_input = isinstance(err, KaelabError)
        if not is_input and hc.mode != RunMode.MULTIRUN:
            raise  # a bug in a single run: the traceback is the report
        message = " ".join(str(err).split())
        if is_input:
            print(f"kaelab: error: {message}", file=sys.stderr, flush=True)
            if hc.mode != RunMode.MULTIRUN:
                sys.exit(2)
        else:  # a sweep job's crash (a bug, out of memory, ...): its traceback goes to the job's log
            log.exception("job failed")
            message = f"{type(err).__name__}: {message}"
        # a sweep job's error fails that job only: the sweep goes on and reports it at the end
        # (kaelab.run_guard.RunGuard: sweep_summary.json, and a non-zero exit)
        try:
            (run_dir / ERROR_FILE).write_text(message + "\n")
        except OSError:
            pass
        return None
    from kaelab.metrics import summary_table

    log.info("%s", summary_table(cfg, run_dir, metrics, time.perf_counter() - t0))
    return value  # what a Hydra sweeper that optimises (Optuna) reads


def optimized_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The value a Hydra sweeper optimises (hydra/sweeper=optuna): ``metrics[cfg.optimized_metric]``
    (a validation metric; check_values refuses test ones), None when no metric is named."""
    key = OmegaConf.select(cfg, "optimized_metric", default=None)
    if key is None:
        return None
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        have = ", ".join(k for k, v in sorted(metrics.items()) if isinstance(v, float) and "test" not in k)
        raise KaelabError(f"optimized_metric={key} is not a number in this run's metrics.json (have: {have})")
    return float(value)


def interrupt_message(signum: int, run_dir: Path | None, task: str | None, overrides: list[str]) -> str:
    """One line: which signal stopped the run, where its last checkpoint is, how to resume."""
    name = signal.Signals(signum).name
    if run_dir is None:
        return f"kaelab: stopped by {name} before the run started"
    last = run_dir / "checkpoints" / "last.ckpt"
    if task == "train" and last.exists():
        keep = [o for o in overrides if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
        cmd = ["python", "-m", "kaelab", *keep, f"ckpt_path={last}", f"hydra.run.dir={run_dir}"]
        return (
            f"kaelab: stopped by {name}; no metrics.json; the last checkpoint is {last}; "
            f"resume with: {' '.join(shlex.quote(c) for c in cmd)}"
        )
    stage_ckpts = sorted(run_dir.glob("*/checkpoints/last.ckpt"))
    where = f" (partial training checkpoints: {stage_ckpts[0].parent})" if stage_ckpts else ""
    return (
        f"kaelab: stopped by {name}; no metrics.json in {run_dir}{where}; no resumable checkpoint for "
        f"task={task}: rerun the same command (finished cache artifacts are reused)"
    )


def main() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal)
    try:
        _hydra_main()
    except BaseException:
        signum = _STATE["signal"]
        if signum is None:
            raise
        for sig in (signal.SIGTERM, signal.SIGINT):  # the way out is not interrupted again
            signal.signal(sig, signal.SIG_IGN)
        print(interrupt_message(signum, _STATE["run_dir"], _STATE["task"], _STATE["overrides"]), file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        sys.exit(128 + signum)


if __name__ == "__main__":
    main()
