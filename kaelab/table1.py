"""The KAE paper's Table 1 from one command: base model, KAE surrogate and class-unlearning edits
over KAE seeds and target classes, beside the paper's numbers.

    python -m kaelab.table1                                  # both datasets, 5 seeds, all classes
    python -m kaelab.table1 --datasets yinyang --seeds 0 1 2 -- edit.targets=nearest_retained_centroid

Each (dataset, seed, target class) is one ``task=edit`` run (``+experiment=<dataset>_edit``) in
``<out>/<dataset>/seed<s>/class<c>/``; a run whose metrics.json exists is reused, so the command
resumes after an interruption. Base models and KAEs come from the artifact cache (one base model
per dataset, one KAE per seed). Writes ``<out>/table1.md`` and ``<out>/table1.csv`` (test split).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import sys
from pathlib import Path

from kaelab.aggregate import fmt_mean_sd, markdown_table
from kaelab.errors import KaelabError

log = logging.getLogger("kaelab.table1")

CLASSES = {"yinyang": [0, 1, 2], "mnist": list(range(10))}
CLASS_NAMES = {"yinyang": ["Yin", "Yang", "Dots"]}
# Table 1 of the KAE paper (percent): MLP top-1, KAE top-1 (SD), per target class before -> after (SD).
PAPER = {
    "yinyang": {
        "mlp": "99.31",
        "kae": "98.75 (0.15)",
        "classes": {
            0: "98.78 (1.18) -> 85.01 (1.90)",
            1: "98.27 (0.21) -> 78.88 (8.53)",
            2: "99.97 (0.05) -> 62.52 (1.35)",
        },
    },
    "mnist": {
        "mlp": "99.03",
        "kae": "98.53 (0.04)",
        "classes": {1: "99.23 (0.04) -> 0.0 (0.0)", 4: "98.29 (0.08) -> 0.0 (0.0)", 7: "98.01 (0.18) -> 0.0 (0.0)"},
    },
}


def run_edit(dataset: str, seed: int, cls: int, run_dir: Path, overrides: list[str], figure: bool) -> dict:
    """One edit run in-process (reused if its metrics.json exists)."""
    metrics_path, marker = run_dir / "metrics.json", run_dir / "table1_overrides.json"
    if metrics_path.is_file():
        used = json.loads(marker.read_text()) if marker.is_file() else None
        if used != overrides:
            raise KaelabError(
                f"{run_dir} holds a run with overrides {used}, not {overrides}: use another --out for other settings"
            )
        return json.loads(metrics_path.read_text())
    from hydra import compose, initialize_config_module

    from kaelab.config import check_schema, register_configs
    from kaelab.pipeline import run

    register_configs()
    args = [
        f"+experiment={dataset}_edit",
        f"seed={seed}",
        f"edit.target_class={cls}",
        f"edit.figure={str(figure).lower()}",
        f"paths.run_dir={run_dir}",
        "callbacks=minimal",
        *overrides,
    ]
    with initialize_config_module(version_base="1.3", config_module="kaelab.conf"):
        cfg = compose(config_name="config", overrides=args)
    check_schema(cfg)
    log.info("running %s", " ".join(args))
    metrics = run(cfg)
    marker.write_text(json.dumps(overrides))
    return metrics


def fmt(values: list[float]) -> str:
    """Percent "mean (SD)" over seeds (the writer shared with ``python -m kaelab.aggregate``)."""
    return fmt_mean_sd(values, scale=100.0)


def table_rows(dataset: str, runs: dict[tuple[int, int], dict]) -> list[dict]:
    """One row per target class: mean (SD) over seeds of the test-split numbers."""
    seeds = sorted({s for s, _ in runs})
    classes = sorted({c for _, c in runs})
    names = CLASS_NAMES.get(dataset)
    rows = []
    for c in classes:
        rs = [runs[(s, c)] for s in seeds if (s, c) in runs]
        label = f"Class {c}" + (f" ({names[c]})" if names else "")
        rows.append(
            {
                "dataset": dataset,
                "target": label,
                "n_seeds": len(rs),
                "base_top1": fmt([r["base/acc"] for r in rs]),
                "kae_top1": fmt([r["edit/acc_before"] for r in rs]),
                "class_before": fmt([r["edit/acc_per_class_before"][c] for r in rs]),
                "class_after": fmt([r["edit/acc_per_class_after"][c] for r in rs]),
                "retain_before": fmt([r["edit/retain_acc_before"] for r in rs]),
                "retain_after": fmt([r["edit/retain_acc_after"] for r in rs]),
                "max_class_after": f"{max(r['edit/acc_per_class_after'][c] for r in rs) * 100:.2f}",
                "edit_time_s": f"{statistics.median(r['edit/time_s'] for r in rs):.2f}",
                "paper": PAPER[dataset]["classes"].get(c, ""),
            }
        )
    return rows


def markdown(rows: list[dict], overrides: list[str]) -> str:
    out = [
        "Table 1 (test split; mean (SD) over KAE seeds, percent). Edited acc.: accuracy on the target class "
        "before -> after the edit; retained: accuracy over the other classes before -> after.",
        "",
    ]
    if overrides:
        out += [f"Overrides: `{' '.join(overrides)}`", ""]
    headers = [
        "dataset", "MLP top-1", "KAE top-1 (SD)", "target", "edited acc. (SD)", "retained acc. (SD)",
        "worst seed after", "edit time (s)", "paper: MLP / KAE / edited",
    ]  # fmt: skip
    body = []
    for r in rows:
        p = PAPER[r["dataset"]]
        body.append(
            [
                r["dataset"],
                r["base_top1"],
                r["kae_top1"],
                r["target"],
                f"{r['class_before']} -> {r['class_after']}",
                f"{r['retain_before']} -> {r['retain_after']}",
                r["max_class_after"],
                r["edit_time_s"],
                f"{p['mlp']} / {p['kae']} / {r['paper'] or '-'}",
            ]
        )
    out.append(markdown_table(headers, body))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    overrides: list[str] = []
    if "--" in argv:
        idx = argv.index("--")
        argv, overrides = argv[:idx], argv[idx + 1 :]
    ap = argparse.ArgumentParser(prog="python -m kaelab.table1", description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["yinyang", "mnist"], choices=sorted(CLASSES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--classes", nargs="+", type=int, default=None, help="target classes (default: all)")
    ap.add_argument("--out", type=Path, default=Path("outputs/table1"))
    ap.add_argument("--no-run", action="store_true", help="only aggregate the runs already there")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    rows = []
    try:
        for ds in args.datasets:
            classes = args.classes if args.classes is not None else CLASSES[ds]
            bad = [c for c in classes if c not in CLASSES[ds]]
            if bad:
                raise KaelabError(f"--classes {bad[0]} is not a {ds} class ({CLASSES[ds]})")
            runs = {}
            for s in args.seeds:
                for c in classes:
                    run_dir = (args.out / ds / f"seed{s}" / f"class{c}").resolve()
                    if args.no_run and not (run_dir / "metrics.json").is_file():
                        continue
                    runs[(s, c)] = run_edit(ds, s, c, run_dir, overrides, figure=(s == args.seeds[0]))
            if runs:
                rows += table_rows(ds, runs)
    except KaelabError as err:
        print(f"kaelab.table1: error: {err}", file=sys.stderr)
        return 2
    if not rows:
        print("kaelab.table1: error: no runs to tabulate", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    md = markdown(rows, overrides)
    (args.out / "table1.md").write_text(md)
    with open(args.out / "table1.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(md)
    print(f"wrote {args.out / 'table1.md'} and {args.out / 'table1.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
