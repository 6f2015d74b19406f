"""python -m kaelab.table1: aggregation of edit runs into Table 1 (mean (SD) over seeds), reuse of
finished runs, and refusal to mix runs made with other overrides."""

import json

import pytest

from kaelab.table1 import main


def _fake_run(root, seed, cls, forget_after, retain_after, overrides=()):
    d = root / "yinyang" / f"seed{seed}" / f"class{cls}"
    d.mkdir(parents=True)
    per_before = [0.99, 0.98, 0.97]
    per_after = list(per_before)
    per_after[cls] = forget_after
    m = {
        "base/acc": 0.99,
        "edit/acc_before": 0.98 + 0.01 * seed,
        "edit/acc_per_class_before": per_before,
        "edit/acc_per_class_after": per_after,
        "edit/retain_acc_before": 0.98,
        "edit/retain_acc_after": retain_after,
        "edit/time_s": 0.1,
    }
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "table1_overrides.json").write_text(json.dumps(list(overrides)))


def test_table_from_existing_runs(tmp_path, capsys):
    for seed, after in ((0, 0.0), (1, 0.02)):
        _fake_run(tmp_path, seed, 2, after, 0.97)
    rc = main(["--datasets", "yinyang", "--seeds", "0", "1", "--classes", "2", "--out", str(tmp_path), "--no-run"])
    assert rc == 0
    md = (tmp_path / "table1.md").read_text()
    row = next(line for line in md.splitlines() if "Class 2 (Dots)" in line)
    assert "97.00 (0.00) -> 1.00 (1.41)" in row  # target class before -> after, mean (SD) over 2 seeds
    assert "98.50 (0.71)" in row  # KAE top-1 over seeds
    assert "99.97 (0.05) -> 62.52 (1.35)" in row  # the paper's number beside it
    csv_text = (tmp_path / "table1.csv").read_text()
    assert csv_text.splitlines()[0].startswith("dataset,target,n_seeds")


def test_runs_made_with_other_overrides_are_not_mixed_in(tmp_path, capsys):
    _fake_run(tmp_path, 0, 0, 0.1, 0.9, overrides=["edit.lam=1"])
    rc = main(["--datasets", "yinyang", "--seeds", "0", "--classes", "0", "--out", str(tmp_path), "--", "edit.lam=2"])
    assert rc == 2
    assert "use another --out" in capsys.readouterr().err


def test_no_runs_is_an_error(tmp_path, capsys):
    assert main(["--datasets", "yinyang", "--out", str(tmp_path), "--no-run"]) == 2
    assert "no runs" in capsys.readouterr().err


@pytest.mark.parametrize("cls", ["3"])
def test_bad_class(tmp_path, capsys, cls):
    assert main(["--datasets", "yinyang", "--classes", cls, "--out", str(tmp_path), "--no-run"]) == 2
    assert "not a yinyang class" in capsys.readouterr().err
