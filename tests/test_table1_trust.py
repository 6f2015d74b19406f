"""python -m kaelab.table1 refuses what would make its table lie: an override after ``--`` of a key the
driver sets per cell, an override Hydra cannot compose (one line, before any run), and runs made with
other settings; equivalent overrides in another order reuse the runs; the retained column shows the
accuracy after the edit."""

import json
from pathlib import Path

import pytest

import kaelab.pipeline
from kaelab.table1 import main

PER_CLASS_BEFORE = [0.99, 0.98, 0.97]


def fake_run(root, seed, cls, overrides=(), retain_before=0.98, retain_after=0.97, forget_after=0.0):
    """A finished Table 1 cell as run_edit leaves it (metrics.json and the overrides it ran with)."""
    d = root / "yinyang" / f"seed{seed}" / f"class{cls}"
    d.mkdir(parents=True)
    per_after = list(PER_CLASS_BEFORE)
    per_after[cls] = forget_after
    metrics = {
        "base/acc": 0.99,
        "edit/target_class": [cls],
        "edit/acc_before": 0.98,
        "edit/acc_per_class_before": PER_CLASS_BEFORE,
        "edit/acc_per_class_after": per_after,
        "edit/retain_acc_before": retain_before,
        "edit/retain_acc_after": retain_after,
        "edit/time_s": 0.1,
    }
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "table1_overrides.json").write_text(json.dumps(list(overrides)))
    return d


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the driver starts a cell (a pipeline run)."""
    started = []

    def run(cfg):
        started.append(cfg)
        raise AssertionError("the driver ran a cell")

    monkeypatch.setattr(kaelab.pipeline, "run", run)
    return started


def yinyang(tmp_path, *extra):
    return ["--datasets", "yinyang", "--seeds", "0", "--classes", "0", "--out", str(tmp_path), *extra]


OWNED = [
    "edit.target_class=1",
    "edit.target_class=[1]",
    "+edit.target_class=1",
    "seed=1",
    "+seed=1",
    "++seed=1",
    "~seed",
    "task=kae",
    "+experiment=mnist_edit",
    "experiment=mnist_edit",
    "paths.run_dir=/tmp/one_dir_for_all",
    "edit.figure=true",
]


@pytest.mark.parametrize("owned", OWNED)
@pytest.mark.parametrize("where", ["alone", "first", "last"])
def test_keys_the_driver_sets_per_cell_are_refused_after_the_separator(tmp_path, capsys, no_work, owned, where):
    """Catches a driver that appends the user's overrides after its own (every cell then ran the
    user's class or seed: "Class 0" reporting class 0 after forgetting class 1, or an SD of 0 over
    five copies of one seed), and one that recognises the key in one spelling or position only.
    The reused cell holds the same overrides, so only the refusal makes the exit code 2."""
    given = {"alone": [owned], "first": [owned, "edit.lam=0.2"], "last": ["edit.lam=0.2", owned]}[where]
    fake_run(tmp_path, 0, 0, overrides=given)
    assert main(yinyang(tmp_path, "--", *given)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("kaelab.table1: error:")
    assert owned.lstrip("+~").split("=")[0] in err and "set by the driver" in err
    assert not (tmp_path / "table1.md").exists() and not no_work


@pytest.mark.parametrize("bad", ["kae.bogus=1", "+kae.bogus=1", "edit.lam=[1", "edit.targets=nowhere"])
def test_an_override_that_does_not_compose_is_one_line_before_any_run(tmp_path, capsys, no_work, bad):
    """Catches a driver that composes each cell's config only when it runs it: a typo is then a
    ConfigCompositionException traceback (or, for a later dataset, an error after hours of runs)."""
    assert main(["--datasets", "yinyang", "mnist", "--seeds", "0", "--out", str(tmp_path), "--", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("kaelab.table1: error:"), err
    assert bad.lstrip("+").split("=")[0] in err
    assert not no_work and not (tmp_path / "yinyang").exists()


@pytest.mark.parametrize(
    "again",
    [
        ["edit.mu=0.3", "edit.lam=0.2"],
        ["edit.mu=0.3", "++edit.lam=0.2"],
        ["edit.lam=0.5", "edit.mu=0.3", "edit.lam=0.2"],
        ["edit.mu=0.3", "edit.lam= 0.2"],
    ],
)
def test_the_same_overrides_in_another_order_reuse_the_runs(tmp_path, capsys, no_work, again):
    """Catches a driver that compares the cell's overrides as a list: `-- edit.mu=0.3 edit.lam=0.2`
    then refuses (or with the refusal removed, reruns) the cells of `-- edit.lam=0.2 edit.mu=0.3`."""
    fake_run(tmp_path, 0, 0, overrides=["edit.lam=0.2", "edit.mu=0.3"])
    assert main(yinyang(tmp_path, "--no-run", "--", *again)) == 0, capsys.readouterr().err
    assert "Class 0" in (tmp_path / "table1.md").read_text()


def test_other_values_in_another_order_are_still_refused(tmp_path, capsys, no_work):
    """Catches an order-free comparison that compares keys only (or the set of values)."""
    fake_run(tmp_path, 0, 0, overrides=["edit.lam=0.2", "edit.mu=0.3"])
    assert main(yinyang(tmp_path, "--no-run", "--", "edit.mu=0.2", "edit.lam=0.3")) == 2
    assert "use another --out" in capsys.readouterr().err


def test_a_cell_that_forgot_another_class_is_refused(tmp_path, capsys):
    """Catches a driver that trusts the directory name: a class0 cell whose run forgot class 1 (as
    every cell did when `edit.target_class=1` was appended) must not be tabulated as class 0."""
    d = fake_run(tmp_path, 0, 0)
    metrics = json.loads((d / "metrics.json").read_text())
    metrics["edit/target_class"] = [1]
    (d / "metrics.json").write_text(json.dumps(metrics))
    assert main(yinyang(tmp_path, "--no-run")) == 2
    err = capsys.readouterr().err
    assert "forgot [1]" in err and "class 0" in err


def test_retained_column_shows_the_accuracy_after_the_edit(tmp_path, capsys):
    """Catches a table that shows the retained accuracy before the edit where the value after
    belongs (or the two swapped): before = 50 %, after = 90 % here, so only the right order matches."""
    fake_run(tmp_path, 0, 0, retain_before=0.50, retain_after=0.90)
    assert main(yinyang(tmp_path, "--no-run")) == 0
    row = next(line for line in (tmp_path / "table1.md").read_text().splitlines() if "Class 0 (Yin)" in line)
    assert "| 50.00 (0.00) -> 90.00 (0.00) |" in row
    csv_row = (tmp_path / "table1.csv").read_text().splitlines()
    header, values = csv_row[0].split(","), csv_row[1].split(",")
    assert values[header.index("retain_after")] == "90.00 (0.00)"
    assert values[header.index("retain_before")] == "50.00 (0.00)"


def test_cells_run_with_the_drivers_keys_and_the_users_overrides(tmp_path, monkeypatch):
    """Catches a driver whose up-front validation leaks into the cells (every cell composed with the
    first cell's seed or class) or drops the user's allowed overrides from them."""
    seen = []

    def run(cfg):
        seen.append((cfg.seed, cfg.edit.target_class, cfg.edit.lam, cfg.task, cfg.paths.run_dir))
        Path(cfg.paths.run_dir).mkdir(parents=True)  # as the pipeline does
        metrics = json.loads((fake_run(tmp_path / "fake", cfg.seed, 0) / "metrics.json").read_text())
        return metrics | {"edit/target_class": [cfg.edit.target_class]}

    monkeypatch.setattr(kaelab.pipeline, "run", run)
    out = tmp_path / "out"
    argv = ["--datasets", "yinyang", "--seeds", "0", "1", "--classes", "0", "--out", str(out), "--", "edit.lam=0.2"]
    assert main(argv) == 0
    cell = lambda s: str((out / "yinyang" / f"seed{s}" / "class0").resolve())
    assert seen == [(0, 0, 0.2, "edit", cell(0)), (1, 0, 0.2, "edit", cell(1))]
