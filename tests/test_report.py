"""The report pages (kaelab.report): every run's and every sweep's ``report.html``, made from small
real runs (a 2-job sweep over seeds, then one single run served from the cache), checked as HTML and
in headless Chromium (skipped with a reason where ``chromium`` is not installed)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import FAST, find_data_dir, run_cfg, run_cli
from kaelab.aggregate import fmt_mean_sd

SMALL = [
    "data.n_train=600",
    "data.n_val=200",
    "data.n_test=400",
    "data.batch_size=100",
    "model.epochs=30",
    "kae.epochs=40",
    "kae.batch_size=200",
    "callbacks=minimal",  # the CSV logger stays on: the pages plot its loss curves
]
DATA_URI_IMG = re.compile(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"')


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(output root, the sweep dir, the single run's CompletedProcess): ``-m seed=0,1``, then the
    seed-0 run again (base model and KAE from the cache)."""
    root = tmp_path_factory.mktemp("reports")
    data = find_data_dir()
    sweep = run_cli(["-m", "seed=0,1", *SMALL], root, data)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    single = run_cli(SMALL, root, data)
    assert single.returncode == 0, single.stderr[-3000:]
    return root, next((root / "multirun" / "yinyang_kae").iterdir()), single


def test_run_report_embeds_results_figures_curves_config_and_artifacts(runs):
    """Catches a page that links figures instead of embedding them, misses a PNG of the run or the
    loss curves of its two fits, lacks the paper's number, the config or the cache entries, or is
    written before metrics.json."""
    _, sweep_dir, _ = runs
    job = sweep_dir / "0"
    page = (job / "report.html").read_text()
    metrics = json.loads((job / "metrics.json").read_text())
    assert (job / "report.html").stat().st_mtime >= (job / "metrics.json").stat().st_mtime
    pngs = sorted(job.rglob("*.png"))
    assert {p.name for p in pngs} >= {"kae_picture.png", "path_fidelity.png"}
    assert len(DATA_URI_IMG.findall(page)) == len(pngs) + 2  # + the base model's and the KAE's loss curves
    assert page.count("<img") == len(DATA_URI_IMG.findall(page))  # every image is a data URI
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script src" not in page
    assert "KAE surrogate" in page and "98.75 (0.15)" in page and f"{100 * metrics['kae/test_acc']:.2f}" in page
    assert "base model training (base_model/csv/metrics.csv)" in page and "KAE training (kae/csv/metrics.csv)" in page
    assert "task: kae" in page and "seed=0" in page  # the composed config and the overrides
    kae_entry = root_cache(runs) / "kae" / metrics["kae/key"]
    assert kae_entry.is_dir() and f"<code>{kae_entry}</code>" in page
    assert "kae/train_time_s" in page and "built in this run" in page


def root_cache(runs) -> Path:
    return runs[0] / "cache"


def test_kae_picture_is_one_row_of_panels(runs):
    """Catches a picture that is not a row (input layer, KAE steps, penultimate layer side by side)."""
    import matplotlib.image as mpimg

    img = mpimg.imread(runs[1] / "0" / "kae_picture.png")
    assert img.shape[1] > 4 * img.shape[0] and img[..., :3].std() > 0.05


def test_single_run_summary_ends_with_its_report(runs):
    """Catches a summary that does not lead with the headline or end with the page's path, and a
    page that hides that its models came from the cache."""
    _, _, proc = runs
    out = (proc.stdout + proc.stderr).strip().splitlines()
    start = next(i for i, ln in enumerate(out) if "summary of yinyang_kae (task=kae)" in ln)
    summary = out[start:]
    assert summary[1].split()[:3] == ["headline", "KAE", "surrogate"]
    name, path = summary[-1].split()
    assert name == "report" and path.endswith("report.html") and Path(path).is_file()
    page = Path(path).read_text()
    assert "No per-epoch losses under the run dir (base, kae from the cache" in page
    assert page.count('<span class="ok">yes</span>') == 2  # base/cache_hit, kae/cache_hit


def test_sweep_report_has_table_plot_and_job_links(runs):
    """Catches a sweep page without the mean (SD) over seeds, the plot, or working job links."""
    _, sweep_dir, _ = runs
    page = (sweep_dir / "report.html").read_text()
    accs = [json.loads((sweep_dir / j / "metrics.json").read_text())["kae/test_acc"] for j in ("0", "1")]
    assert fmt_mean_sd(accs) in page
    assert len(DATA_URI_IMG.findall(page)) == 1 and "per job against seed" in page
    links = re.findall(r'<a href="([^"#]+)"', page)
    assert sorted(links) == ["0/report.html", "1/report.html"]
    assert all((sweep_dir / link).is_file() for link in links)
    assert "None: every job finished." in page


def test_sweep_report_lists_failed_jobs_and_cli_rerenders(runs, tmp_path, capsys):
    """Catches a sweep page that drops a failed job or its one-line error, and a re-render that
    cannot tell a sweep dir from a run dir."""
    from kaelab.report.__main__ import main

    copy = tmp_path / "sweep"
    shutil.copytree(runs[1], copy)
    (copy / "sweep_summary.json").unlink()
    (copy / "report.html").unlink()
    (copy / "2" / ".hydra").mkdir(parents=True)
    overrides = (copy / "0" / ".hydra" / "overrides.yaml").read_text()
    (copy / "2" / ".hydra" / "overrides.yaml").write_text(overrides.replace("seed=0", "seed=2"))
    (copy / "2" / "error.txt").write_text("kae.lr=-1 must be > 0\n")
    assert main([str(copy)]) == 0
    page = (copy / "report.html").read_text()
    assert "Failed jobs (1)" in page and "kae.lr=-1 must be &gt; 0" in page
    assert main([str(copy / "0")]) == 0  # a run dir: its own page again
    assert capsys.readouterr().out.split() == [str(copy / "report.html"), str(copy / "0" / "report.html")]


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_report_cli_refuses_a_dir_that_is_neither(tmp_path, capsys, make):
    """Catches a traceback, or a page written into a directory that is no run and no sweep."""
    from kaelab.report.__main__ import main

    target = tmp_path / "d"
    if make == "empty":
        target.mkdir()
    assert main([str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kaelab.report: error: ") and not (target / "report.html").exists()


def test_a_page_that_fails_costs_one_warning_not_the_results(tmp_path, monkeypatch, caplog, data_dir):
    """Catches a rendering error that propagates (a lost exit code) or a page rendered before
    metrics.json is written."""
    import kaelab.report.run as report_run

    def boom(run_dir, *args, **kwargs):
        assert (Path(run_dir) / "metrics.json").is_file()
        raise RuntimeError("boom")

    monkeypatch.setattr(report_run, "write_run_report", boom)
    overrides = ["+experiment=yinyang_mlp", "model.epochs=2", "data.n_train=200", "data.n_val=100", "data.n_test=100"]
    with caplog.at_level(logging.WARNING, logger="kaelab.report"):
        metrics = run_cfg([*overrides, *FAST], tmp_path, data_dir)
    assert "test/acc" in metrics and (tmp_path / "run" / "metrics.json").is_file()
    assert not (tmp_path / "run" / "report.html").exists()
    assert [r.getMessage() for r in caplog.records if r.name == "kaelab.report"] == [
        "no report page: RuntimeError: boom"
    ]


def test_summary_leads_with_each_stages_headline(tmp_path):
    """Catches a summary that buries the headline (edit before -> after, hybrid vs base, beta_0,
    radius) or omits the page's path."""
    from types import SimpleNamespace

    from kaelab.metrics import summary_table

    cfg = SimpleNamespace(name="x", task="edit", paths=SimpleNamespace(cache_dir=tmp_path / "cache"))
    edit = {"edit/forget_acc_before": 0.98, "edit/forget_acc_after": 0.0, "edit/target_class": 4}
    edit.update({"edit/retain_acc_before": 0.99, "edit/retain_acc_after": 0.97, "kae/test_acc": 0.9})
    (tmp_path / "report.html").write_text("<html></html>")
    lines = summary_table(cfg, tmp_path, edit, 3.0).splitlines()
    assert lines[1].split(None, 1) == ["headline", "forget acc 98.00% -> 0.00%, retain acc 99.00% -> 97.00% (class 4)"]
    assert lines[-1].split() == ["report", str(tmp_path / "report.html")]
    cases = {
        "DMD hybrid 97.30% vs base 98.40% (test acc)": {"dmd/test_acc": 0.973, "dmd/base_test_acc": 0.984},
        "beta_0 per layer 368, 10, 1 (eps 0.166)": {"topology/beta0_layers": [368, 10, 1], "topology/layer_eps": 0.166},
        "spectral radius of K 0.9900": {"spectrum/radius_K": 0.99},
    }
    for text, metrics in cases.items():
        assert summary_table(cfg, tmp_path, metrics, 1.0).splitlines()[1].split(None, 1)[1] == text


def test_shared_pca_is_one_view_for_every_panel():
    """Catches a picture whose panels each get their own PCA (a shifted cloud would look unmoved)."""
    from kaelab.viz.kae import SharedPCA, picked_steps

    g = torch.Generator().manual_seed(0)
    x_j = torch.randn(300, 6, generator=g) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    shift = torch.tensor([2.0, -1.0, 0.0, 0.0, 0.0, 0.0])
    pca = SharedPCA(2).fit(x_j)
    moved = pca.transform(x_j + shift) - pca.transform(x_j)
    expected = (shift.double() @ pca.axes_).numpy()
    assert abs(moved - expected).max() < 1e-5 and abs(expected).min() > 0.9
    assert picked_steps(100, 5) == [0, 25, 50, 75, 100] and picked_steps(2, 5) == [0, 1, 2]


# ------------------------------------------------------------------------------- in a browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--hide-scrollbars",
]  # fmt: skip


def browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
@pytest.mark.parametrize("which", ["run", "sweep"])
def test_report_renders_in_headless_chromium(runs, tmp_path, which):
    """Catches an image the browser cannot decode, a script or console error, and a blank page.
    Screenshots go to $KAELAB_SCREENSHOT_DIR when set (<which>_report.png)."""
    import matplotlib.image as mpimg

    page = runs[1] / ("0" if which == "run" else "") / "report.html"
    dom = browse(page, tmp_path / "profile", "--dump-dom")
    status = re.search(r'id="report-status" data-loaded="(\d+)" data-failed="(\d+)"', dom.stdout)
    assert status, dom.stdout[-2000:] + dom.stderr[-2000:]
    assert int(status.group(1)) == page.read_text().count("<img") > 0 and status.group(2) == "0"
    assert [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln] == []
    text = re.sub(r"<[^>]+>", " ", dom.stdout.split("<main>", 1)[1])
    assert len(text.split()) > 100
    shot = tmp_path / f"{which}_report.png"
    browse(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000")
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2000, 1280) and pixels[..., :3].std() > 0.05  # not one flat colour
    if os.environ.get("KAELAB_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["KAELAB_SCREENSHOT_DIR"]) / shot.name)


def test_sweep_report_plots_each_swept_value_with_sd(tmp_path):
    """Catches a sweep page whose table or plot lose the swept key's groups (mean (SD) over seeds per
    value), on a written sweep of 2 values x 2 seeds."""
    from kaelab.report import write_report

    accs = {("0.1", "0"): 0.90, ("0.1", "1"): 0.92, ("0.2", "0"): 0.80, ("0.2", "1"): 0.86}
    for n, ((lr, seed), acc) in enumerate(accs.items()):
        (tmp_path / str(n) / ".hydra").mkdir(parents=True)
        (tmp_path / str(n) / ".hydra" / "overrides.yaml").write_text(f"- kae.lr={lr}\n- seed={seed}\n")
        (tmp_path / str(n) / "metrics.json").write_text(json.dumps({"kae/test_acc": acc, "kae/state_fvu": acc / 10}))
    page = write_report(tmp_path).read_text()
    assert fmt_mean_sd([0.90, 0.92]) in page and fmt_mean_sd([0.80, 0.86]) in page
    assert "<th>kae.lr</th>" in page and len(DATA_URI_IMG.findall(page)) == 1 and "against kae.lr" in page
