"""python -m kaelab.aggregate does not make an incomplete sweep look complete: unreadable metrics.json
files are named as such, a sweep with a job lacking a result exits non-zero, NaN or string values are
not counted in n and are flagged, and a --seed-key that no job has is refused."""

import csv
import json

import pytest
import yaml

from kaelab.aggregate import main, sweep_summary


def make_jobs(root, results):
    """A sweep dir (no multirun.yaml: only the jobs below count) with one job per (seed, iso, result):
    a dict is written as metrics.json, a str verbatim as metrics.json's text, None writes nothing."""
    for num, (seed, iso, result) in enumerate(results):
        job = root / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}", f"kae.lambdas.iso={iso}"]))
        if isinstance(result, dict):
            (job / "metrics.json").write_text(json.dumps(result))
        elif isinstance(result, str):
            (job / "metrics.json").write_text(result)
    return root


COMPLETE = [(s, iso, {"kae/test_acc": 0.9 + 0.01 * s, "kae/state_fvu": 0.1}) for s in (0, 1) for iso in (0, 1)]


def table_line(md, first_cell):
    return next(line for line in md.splitlines() if line.startswith(f"| {first_cell} |"))


@pytest.mark.parametrize("text", ["{not json", "", "[]", "null", "3"])
def test_an_unreadable_metrics_json_is_named_and_fails_the_command(tmp_path, capsys, text):
    """Catches a reader that reports a garbage, empty, list or null metrics.json as "no metrics.json"
    (the job did write one: it is broken, which is a different thing to look into) and a command that
    exits 0 on a sweep whose table lacks a job."""
    sweep = make_jobs(tmp_path / "sweep", [*COMPLETE, (2, 0, text)])
    assert main([str(sweep)]) != 0
    md = (sweep / "aggregate.md").read_text()
    line = next(row for row in md.splitlines() if row.startswith("| 4 |"))
    assert "unreadable metrics.json" in line and "no metrics.json" not in line
    assert "1 of 5 jobs have no result" in capsys.readouterr().err
    assert sweep_summary(sweep)["missing"][0]["error"].startswith("unreadable metrics.json")


def test_a_job_without_any_result_fails_the_command(tmp_path, capsys):
    """Catches a command that writes the table and exits 0 although a job never produced a result."""
    sweep = make_jobs(tmp_path / "sweep", [*COMPLETE, (2, 0, None)])
    assert main([str(sweep)]) == 1
    assert "no metrics.json and no error.txt" in (sweep / "aggregate.md").read_text()


def test_a_complete_sweep_exits_zero(tmp_path, capsys):
    """Catches a command that fails every sweep (the non-zero exit must mean a job lacks a result)."""
    assert main([str(make_jobs(tmp_path / "sweep", COMPLETE))]) == 0
    assert "Jobs without a result" not in capsys.readouterr().out


def test_nan_and_string_values_are_not_counted_and_are_flagged(tmp_path, capsys):
    """Catches a table whose n (or mean) counts a NaN or a string, and one that silently shows the mean
    of the numeric rest as if every job had a value (a diverged seed then vanishes from the table)."""
    results = [
        (0, 0, {"kae/test_acc": 0.90}),
        (1, 0, {"kae/test_acc": float("nan")}),
        (2, 0, {"kae/test_acc": "oops"}),
        (0, 1, {"kae/test_acc": 0.80}),
        (1, 1, {"kae/test_acc": 0.82}),
        (2, 1, {"kae/test_acc": 0.84}),
    ]
    sweep = make_jobs(tmp_path / "sweep", results)
    assert main([str(sweep)]) == 0
    md = (sweep / "aggregate.md").read_text()
    assert "| 90.00 (0.00), n=1 * |" in table_line(md, "0")  # the one numeric value, flagged
    assert "*" not in table_line(md, "1")
    assert "2 jobs had a non-numeric value" in md and "job 1: nan" in md and "job 2: 'oops'" in md
    with open(sweep / "aggregate.csv", newline="") as f:
        rows = {r["kae.lambdas.iso"]: r for r in csv.DictReader(f)}
    assert rows["0"]["kae/test_acc_n"] == "1" and rows["1"]["kae/test_acc_n"] == "3"


def test_a_metric_that_is_nan_in_every_job_is_shown_flagged(tmp_path, capsys):
    """Catches a table that drops a metric that diverged in every job instead of showing it failed."""
    results = [(s, iso, {"kae/test_acc": float("nan"), "kae/state_fvu": 0.1}) for s in (0, 1) for iso in (0, 1)]
    sweep = make_jobs(tmp_path / "sweep", results)
    main([str(sweep)])
    md = (sweep / "aggregate.md").read_text()
    assert "`kae/test_acc`" in md.splitlines()[2] and "| - * |" in table_line(md, "0")
    assert "4 jobs had a non-numeric value" in md


def test_a_seed_key_that_no_job_has_is_one_line(tmp_path, capsys):
    """Catches a --seed-key typo that silently averages over nothing (every job its own row)."""
    sweep = make_jobs(tmp_path / "sweep", COMPLETE)
    assert main([str(sweep), "--seed-key", "bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--seed-key bogus" in err and "kae.lambdas.iso" in err
    assert not (sweep / "aggregate.md").exists()


def test_the_default_seed_key_may_be_absent(tmp_path, capsys):
    """Catches a check that refuses every sweep that did not sweep seeds (the default key is optional)."""
    sweep = make_jobs(tmp_path / "sweep", [(0, iso, {"kae/test_acc": 0.9}) for iso in (0, 1)])
    for num in (0, 1):
        (sweep / str(num) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"kae.lambdas.iso={num}"]))
    assert main([str(sweep)]) == 0
