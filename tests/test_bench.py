"""The benchmark script runs end to end (numbers are measured by `make bench`, never asserted here)."""

import json
import sys

from conftest import REPO


def test_bench_quick_writes_all_sections(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    sys.modules.pop("bench", None)
    import bench

    out = tmp_path / "bench.json"
    bench.main(["--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["matmul_flops"] > 0
    for key in (
        "resmlp_mnist/samples_per_s",
        "resmlp_mnist/framework_overhead",
        "resmlp_yinyang/flops",
        "kae_mnist/expm_fwd_bwd_s",
        "kae_mnist/network_s",
        "kae_mnist/expm_speedup_vs_torch",
        "kae_path/step_s_plain",
        "kae_path/step_s_path",
        "spectrum_mnist/decompose_s",
        "spectrum_mnist/table_s",
    ):
        assert result[key] > 0 or key.endswith("overhead"), key
    assert any(k.startswith("dmd/") for k in result)
