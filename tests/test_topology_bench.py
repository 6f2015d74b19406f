"""The topology benchmark runs end to end on tiny inputs (numbers are measured by `make bench`)."""

import sys

from conftest import REPO


def test_bench_topology_quick(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    sys.modules.pop("bench_topology", None)
    import bench_topology

    out: dict = {}
    res = bench_topology.bench_topology(out, quick=True)
    assert res is not None and out == res
    for key in ("mst_s", "giotto_s", "gudhi_s", "speedup_vs_giotto", "speedup_vs_gudhi_same_subsample"):
        assert out[f"topology/beta0_curve/{key}"] > 0, key
    assert out["topology/beta0_curve/same_curve_as_gudhi"] is True
    assert out["topology/beta1/same_numbers"] is True and out["topology/beta1/value"]["gudhi_collapse"] == 1
