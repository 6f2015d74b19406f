"""python -m kaelab.aggregate on synthetic sweep dirs: grouping by the swept keys, mean / SD / n over
seeds, failed, killed and never-started jobs listed; sweep_summary.json with the artifact builds."""

import csv
import json
import statistics

import yaml

from kaelab.aggregate import main, sweep_summary

GRID = ["seed=0,1,2", "kae.lambdas.iso=0,1", "data.n_train=300"]
# (seed, iso) -> kae/test_acc; None: the job failed; "killed": started, no result; absent: never started
ACC = {(0, 0): 0.90, (1, 0): 0.92, (2, 0): None, (0, 1): 0.80, (1, 1): "killed", (2, 1): 0.86}
ORDER = [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1)]  # job numbers 0..4; (2, 1) never started


def make_sweep(root, acc=ACC, order=ORDER, grid=GRID):
    """A sweep dir as Hydra's basic sweeper + kaelab write it (multirun.yaml, <job>/.hydra/...)."""
    root.mkdir(parents=True, exist_ok=True)
    hydra = {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None}}
    hydra["overrides"] = {"task": grid, "hydra": []}
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra, "seed": 0}))
    for num, (seed, iso) in enumerate(order):
        job = root / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"seed={seed}", f"kae.lambdas.iso={iso}", "data.n_train=300"])
        )
        value = acc[(seed, iso)]
        log = ["[..][kaelab.cache][INFO] cache hit: base_model/8fd59388d3a4d104"]
        if num == 0:
            log = ["[..][kaelab.cache][INFO] building base_model/8fd59388d3a4d104"]
        log.append(f"[..][kaelab.cache][INFO] building kae/{num:016x}")
        (job / "yinyang_kae.log").write_text("\n".join(log) + "\n")
        if value is None:
            (job / "error.txt").write_text("kae.lambdas.iso=-1 must be >= 0\n")
        elif value != "killed":
            metrics = {"kae/test_acc": value, "base/test_acc": 0.99, "kae/state_fvu": 0.1 + seed}
            metrics["base/cache_hit"] = True
            (job / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_table_groups_by_swept_keys_with_mean_sd_n_over_seeds(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    assert main([str(sweep)]) == 1  # the table is written; 1: three jobs have no result
    md = (sweep / "aggregate.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| `kae.lambdas.iso`"))
    assert "`seed`" not in header and "data.n_train" not in header  # seed is averaged; n_train never varied
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith(("| 0 ", "| 1 "))}
    for iso, done, lost in (("0", [0.90, 0.92], 1), ("1", [0.80], 2)):
        mean, sd = statistics.fmean(done) * 100, (statistics.stdev(done) * 100 if len(done) > 1 else 0.0)
        assert f"{mean:.2f} ({sd:.2f})" in rows[iso]
        assert f"| {len(done)} ({lost} failed/missing) |" in rows[iso]  # n counts finished jobs only
    with open(sweep / "aggregate.csv", newline="") as f:
        table = {r["kae.lambdas.iso"]: r for r in csv.DictReader(f)}
    assert float(table["0"]["kae/test_acc_mean"]) == statistics.fmean([0.90, 0.92])
    assert float(table["0"]["kae/test_acc_sd"]) == statistics.stdev([0.90, 0.92])
    assert table["0"]["n"] == "2" and table["1"]["n"] == "1" and table["1"]["n_failed"] == "2"
    assert "base/cache_hit_mean" not in table["0"]  # booleans are not averaged


def test_failed_killed_and_never_started_jobs_are_listed(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    main([str(sweep)])
    md = (sweep / "aggregate.md").read_text()
    listed = md[md.index("Jobs without a result") :]
    assert "Jobs without a result (3 of 6)" in listed
    assert "| 2 | failed | seed=2 kae.lambdas.iso=0" in listed and "must be >= 0" in listed
    assert "| 4 | missing | seed=1 kae.lambdas.iso=1" in listed and "no metrics.json and no error.txt" in listed
    assert "| - | missing | seed=2 kae.lambdas.iso=1" in listed and "never started" in listed


def test_sweep_summary_statuses_and_artifact_builds(tmp_path):
    s = sweep_summary(make_sweep(tmp_path / "sweep"))
    assert (s["n_jobs"], s["n_ok"], s["n_failed"], s["n_missing"]) == (6, 3, 1, 2)
    assert s["failed"] == [
        {"job": "2", "overrides": {"seed": "2", "kae.lambdas.iso": "0"}, "error": "kae.lambdas.iso=-1 must be >= 0"}
    ]
    assert [m["job"] for m in s["missing"]] == ["4", "-"]
    assert s["swept_keys"] == ["seed", "kae.lambdas.iso"]
    assert s["artifact_builds"] == {"base_model": 1, "kae": 5}  # one base model for the sweep
    assert s["artifact_cache_hits"] == {"base_model": 4}


def test_metrics_option_and_errors(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    assert main([str(sweep), "--metrics", "kae/state_fvu"]) == 1
    header = (sweep / "aggregate.md").read_text().splitlines()[2]
    assert "`kae/state_fvu`" in header and "kae/test_acc" not in header
    assert main([str(sweep), "--metrics", "kae/nope"]) == 2
    assert "kae/nope is in no job's metrics.json" in capsys.readouterr().err
    assert main([str(tmp_path / "absent")]) == 2
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "holds no sweep job" in capsys.readouterr().err


def test_seed_key_option_groups_by_seed_instead(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    assert main([str(sweep), "--seed-key", "kae.lambdas.iso"]) == 1
    md = (sweep / "aggregate.md").read_text()
    assert md.splitlines()[2].startswith("| `seed` | n |")
    row0 = next(line for line in md.splitlines() if line.startswith("| 0 |"))
    acc = statistics.fmean([0.90, 0.80]) * 100, statistics.stdev([0.90, 0.80]) * 100
    assert f"{acc[0]:.2f} ({acc[1]:.2f})" in row0
