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
        "matmul_flops_bf16",
        "probe_bf16_over_fp32",
        "resmlp_mnist_bf16/fraction_of_probe",
        "kae_mnist_bf16/fraction_of_probe",
        "kae_mnist_bf16/expm_fwd_bwd_s",
        "kae_path/step_s_plain",
        "kae_path/step_s_path",
        "kae_path_1thread/step_s_path_split",
        "edit_mnist/retrain_over_edit_reference_targets",
        "spectrum_mnist/decompose_s",
        "spectrum_mnist/table_s",
    ):
        if key.endswith("overhead"):  # a share of a step, clamped at 0: 0 when the framework costs nothing
            assert 0 <= result[key] < 1, key
        else:
            assert result[key] > 0, key
    assert any(k.startswith("dmd/") for k in result)


def test_bench_compare_checks_ratios_not_times(tmp_path, monkeypatch, capsys):
    """Two runs agree when their ratios do: times are ignored, an overhead is compared as the step
    ratio 1 + overhead (3% vs 2.5% overhead agree), and one ratio 20% off fails the comparison."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_compare

    a = {"x/step_s": 1.0, "x/fraction_of_probe": 0.50, "x/framework_overhead": 0.030, "y/speedup_vs_z": 10.0,
         "x/fraction_of_probe_measurement_error": False}  # fmt: skip
    b = {"x/step_s": 3.0, "x/fraction_of_probe": 0.52, "x/framework_overhead": 0.025, "y/speedup_vs_z": 8.0,
         "x/fraction_of_probe_measurement_error": False}  # fmt: skip
    rows = {r[0]: r for r in bench_compare.compare(a, b, 0.10)}
    assert set(rows) == {"x/fraction_of_probe", "x/framework_overhead", "y/speedup_vs_z"}
    assert rows["x/framework_overhead"][1:3] == (1.03, 1.025) and rows["x/framework_overhead"][4]
    assert not rows["y/speedup_vs_z"][4] and abs(rows["y/speedup_vs_z"][3] - 0.2) < 1e-12
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert bench_compare.main([str(pa), str(pb)]) == 1
    assert "2 of 3 ratios agree within 10%; not: y/speedup_vs_z" in capsys.readouterr().out
    b["y/speedup_vs_z"] = 9.5
    pb.write_text(json.dumps(b))
    assert bench_compare.main([str(pa), str(pb)]) == 0
