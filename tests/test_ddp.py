"""trainer=ddp on the CPU: 2 processes over gloo (ddp_spawn), through the real CLI, ending with the
same metrics.json contract as a single-process run.

Wrong implementations these catch: DDP that silently runs one process (the step count would not
halve), a DDP-trained artifact cached under the single-process key (a larger global batch passing
for the recipe), steps or CSV rows lost between the workers and the launching process, and test
metrics computed on DistributedSampler's padded shards instead of the whole test split.
"""

import csv
import json

from conftest import run_cli

SMALL = [
    "+experiment=yinyang_kae",
    "data.n_train=1000",
    "data.n_val=200",
    "data.n_test=500",
    "data.batch_size=100",
    "model.epochs=4",
    "kae.epochs=4",
    "kae.batch_size=250",
    "callbacks=minimal",
    "trainer.num_threads=1",
]


def _run(tmp_path, name, extra):
    run_dir = tmp_path / name
    proc = run_cli([*SMALL, *extra, f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def test_ddp_on_cpu_trains_in_two_processes_and_keeps_the_metrics_contract(tmp_path):
    ddp_dir, ddp = _run(tmp_path, "ddp", ["trainer=ddp_cpu"])
    one_dir, one = _run(tmp_path, "one", [])
    assert set(ddp) == set(one)  # the same metrics.json contract
    # 1000 training pairs, batch 250: 4 steps per epoch in one process, 2 per rank in two
    assert one["kae/steps"] == 4 * 4 and ddp["kae/steps"] == 4 * 2
    assert ddp["kae/key"] != one["kae/key"]  # a different global batch is a different artifact
    base_dirs = [p for p in (tmp_path / "cache" / "base_model").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(base_dirs) == 2  # trained once per strategy, neither passing for the other
    # the test split is evaluated whole, in the launching process (500 samples: accuracies are k/500)
    for m in (ddp, one):
        assert abs(m["base/test_acc"] * 500 - round(m["base/test_acc"] * 500)) < 1e-3
        assert abs(m["kae/test_acc"] * 500 - round(m["kae/test_acc"] * 500)) < 1e-3
    # the workers' CSV rows (per epoch) and the launching process's final row share one log
    with open(ddp_dir / "kae" / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sum(1 for r in rows if r.get("val/loss")) == 4
    with open(ddp_dir / "csv" / "metrics.csv", newline="") as f:
        assert any(r.get("kae/test_acc") for r in csv.DictReader(f))


def test_dmd_callback_under_spawned_ddp_is_a_one_line_error(tmp_path):
    proc = run_cli(
        ["+experiment=yinyang_binary_mlp", "+dmd=yinyang", "trainer=ddp_cpu", f"paths.cache_dir={tmp_path / 'c'}"],
        tmp_path,
    )
    assert proc.returncode != 0
    assert "single-process trainer" in proc.stderr and "Traceback" not in proc.stderr
