"""Every published number comes from a record (``records/*.json``), and the tables that show them
(README.md, docs/results.md) are generated from the records: a hand-edited or stale table fails here."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("records", REPO / "scripts" / "records.py")
records = importlib.util.module_from_spec(spec)
spec.loader.exec_module(records)


def test_every_record_is_complete():
    """Catches a record without its command's provenance (commit, machine, date) or with a value
    missing for one of its seeds (a mean over fewer seeds than the row claims)."""
    recs = records.load_records()
    assert recs, "no records"
    for r in recs:
        assert r["command"].startswith("python -m kaelab"), r["id"]
        assert "{seed}" in r["command"] and "{run_dir}" in r["command"], r["id"]
        assert r.get("commit") and r.get("machine") and r.get("date"), f"{r['id']} was never run"
        for key in r["show"]:
            values = r["metrics"][key]
            assert len(values) == len(r["seeds"]), f"{r['id']}: {key} has {len(values)} values for {r['seeds']}"
            assert all(isinstance(v, (int, float)) for v in values), f"{r['id']}: {key}"


def test_the_tables_are_the_records():
    """README.md and docs/results.md hold exactly what ``scripts/records.py render`` makes of the
    records. Catches a number typed into a table by hand, or a record re-run without re-rendering."""
    stale = {p.name for p, text in records.targets().items() if p.read_text() != text}
    assert not stale, f"{sorted(stale)} differ from records/: run python scripts/records.py render"


def test_every_readme_row_links_to_its_docs_row():
    text = (REPO / "README.md").read_text()
    anchors = set(re.findall(r'<a id="([^"]+)">', (REPO / "docs" / "results.md").read_text()))
    links = re.findall(r"docs/results\.md#([\w-]+)", text)
    assert links and set(links) <= anchors


@pytest.mark.parametrize(
    ("key", "values", "shown"),
    [("kae/test_acc", [0.99, 0.98], "98.50 (0.71)"), ("path/fvu_mean", [0.1], "0.1000"), ("test/acc", [0.5], "50.00")],
)
def test_values_are_shown_as_mean_sd_over_seeds(key, values, shown):
    """Catches a table that shows the first seed, or a population SD, or a fraction as a percentage."""
    assert records.fmt(key, values) == shown


def test_a_record_file_round_trips(tmp_path):
    rec = {"id": "x", "title": "t", "section": "s", "command": "python -m kaelab seed={seed} hydra.run.dir={run_dir}",
           "seeds": [0], "metrics": {"test/acc": [0.5]}, "show": ["test/acc"], "paper": ""}  # fmt: skip
    (tmp_path / "x.json").write_text(json.dumps(rec))
    assert records.load_records(tmp_path)[0]["id"] == "x"
    (tmp_path / "y.json").write_text(json.dumps({"id": "y"}))
    with pytest.raises(ValueError, match="missing fields"):
        records.load_records(tmp_path)
