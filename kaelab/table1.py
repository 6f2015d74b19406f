"""The KAE paper's Table 1 from one command: base model, KAE surrogate and class-unlearning edits
over KAE seeds and target classes, beside the paper's numbers.

    python -m kaelab.table1                                  # both datasets, 5 seeds, all classes
    python -m kaelab.table1 --datasets yinyang --seeds 0 1 2 -- edit.targets=nearest_retained_centroid

Each (dataset, seed, target class) is one ``task=edit`` run (``+experiment=<dataset>_edit``) in
``<out>/<dataset>/seed<s>/class<c>/``; a run whose metrics.json exists is reused, so the command
resumes after an interruption (made with the same overrides, in any order; other ones are refused).
The overrides after ``--`` go to every cell: they are composed once before any run (a bad one is a
one-line error), and may not set what the driver sets per cell (``DRIVER_KEYS``: seed, class, ...).
Base models and KAEs come from the artifact cache (one base model per dataset, one KAE per seed).
Writes ``<out>/table1.md`` and ``<out>/table1.csv`` (test split).
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
from kaelab.errors import ConfigError, KaelabError

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


# the keys each cell's command line sets (cell_overrides), and the option that chooses them: after ``--``
# they would replace the cell's own
DRIVER_KEYS = {
    "experiment": "--datasets",
    "task": "--datasets",
    "seed": "--seeds",
    "edit.target_class": "--classes",
    "edit.figure": "the first seed's cells draw the figures",
    "paths.run_dir": "--out",
}


def parse_overrides(overrides: list[str]) -> list:
    """Hydra's parse of the overrides given after ``--`` (a one-line ConfigError naming a bad one)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser, parsed = OverridesParser.create(), []
    for item in overrides:
        try:
            parsed += parser.parse_overrides(overrides=[item])
        except HydraException as err:
            raise ConfigError(f"cannot parse {item!r} after --: {str(err).splitlines()[0]}") from None
    return parsed


def check_user_overrides(overrides: list[str]) -> None:
    """Refuse an override of a key the driver sets per cell, in any spelling (``seed=1``,
    ``+seed=1``, ``++seed=1``, ``~seed``, ``edit.target_class=[1]``) and position: appended after
    the cell's own, it would make every cell run the same class or seed under its cell's label."""
    for ov in parse_overrides(overrides):
        if ov.key_or_group in DRIVER_KEYS:
            raise ConfigError(
                f"{ov.input_line!r} after --: {ov.key_or_group} is set by the driver for each cell "
                f"({DRIVER_KEYS[ov.key_or_group]})"
            )


def canonical_overrides(overrides: list[str]) -> list[str]:
    """The overrides as a sorted list of ``key=value``, the last one of each key kept: equivalent
    command lines (another order, ``+``/``++`` on a key that composes either way, spacing) compare
    equal. Only overrides that compose are compared, so ``+k=v`` and ``k=v`` set the same value."""
    last: dict[str, str] = {}
    for ov in parse_overrides(overrides):
        key = ov.key_or_group + (f"@{ov.package}" if ov.package else "")
        value = ov.input_line.split("=", 1)[1] if ov.is_sweep_override() else ov.get_value_element_as_str()
        last[key] = f"~{key}" if ov.is_delete() else f"{key}={value}"
    return sorted(last.values())


def cell_overrides(dataset: str, seed: int, cls: int, run_dir: Path, figure: bool) -> list[str]:
    """The command line of one Table 1 cell (the keys of DRIVER_KEYS, and ``callbacks=minimal``)."""
    return [
        f"+experiment={dataset}_edit",
        f"seed={seed}",
        f"edit.target_class={cls}",
        f"edit.figure={str(figure).lower()}",
        f"paths.run_dir={run_dir}",
        "callbacks=minimal",
    ]


def compose_cell(args: list[str]):
    """The cell's config as ``python -m kaelab`` composes it, checked (one-line ConfigError)."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from kaelab.config import check_schema, check_values, register_configs

    register_configs()
    try:
        with initialize_config_module(version_base="1.3", config_module="kaelab.conf"):
            cfg = compose(config_name="config", overrides=args)
    except (HydraException, OmegaConfBaseException) as err:
        cause = f" ({err.__cause__})" if err.__cause__ and str(err.__cause__) not in str(err) else ""
        raise ConfigError(f"{' '.join(f'{err}{cause}'.split())}") from None
    check_schema(cfg)
    check_values(cfg)
    return cfg


def validate_overrides(classes: dict[str, list[int]], seed: int, out: Path, overrides: list[str]) -> None:
    """Before any run: the user's overrides compose with the first cell of each dataset."""
    for ds, ds_classes in classes.items():
        run_dir = (out / ds / f"seed{seed}" / f"class{ds_classes[0]}").resolve()
        compose_cell([*cell_overrides(ds, seed, ds_classes[0], run_dir, False), *overrides])


def read_cell(run_dir: Path, cls: int, overrides: list[str]) -> dict:
    """A finished cell's metrics, refused if it ran with other overrides or forgot another class."""
    marker = run_dir / "table1_overrides.json"
    used = json.loads(marker.read_text()) if marker.is_file() else None
    if used is None or canonical_overrides(used) != canonical_overrides(overrides):
        raise KaelabError(
            f"{run_dir} holds a run with overrides {used}, not {overrides}: use another --out for other settings"
        )
    return check_cell(run_dir, cls, json.loads((run_dir / "metrics.json").read_text()))


def check_cell(run_dir: Path, cls: int, metrics: dict) -> dict:
    """The run of the cell of class ``cls`` forgot exactly that class (``edit/target_class``)."""
    forgot = metrics.get("edit/target_class")
    forgot = forgot if forgot is None or isinstance(forgot, list) else [forgot]
    if forgot is not None and forgot != [cls]:
        raise KaelabError(f"{run_dir} is the cell of class {cls}, but its run forgot {forgot}")
    return metrics


def run_edit(dataset: str, seed: int, cls: int, run_dir: Path, overrides: list[str], figure: bool) -> dict:
    """One edit run in-process (reused if its metrics.json exists)."""
    if (run_dir / "metrics.json").is_file():
        return read_cell(run_dir, cls, overrides)
    from kaelab.pipeline import run

    args = [*cell_overrides(dataset, seed, cls, run_dir, figure), *overrides]
    cfg = compose_cell(args)
    log.info("running %s", " ".join(args))
    metrics = run(cfg)
    (run_dir / "table1_overrides.json").write_text(json.dumps(overrides))
    return check_cell(run_dir, cls, metrics)


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


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The driver's options, and the overrides after ``--`` (every cell's, after the driver's own)."""
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
    return ap.parse_args(argv), overrides


def dataset_classes(args: argparse.Namespace) -> dict[str, list[int]]:
    """The target classes of each dataset (a KaelabError for one the dataset does not have)."""
    out = {}
    for ds in args.datasets:
        out[ds] = args.classes if args.classes is not None else CLASSES[ds]
        bad = [c for c in out[ds] if c not in CLASSES[ds]]
        if bad:
            raise KaelabError(f"--classes {bad[0]} is not a {ds} class ({CLASSES[ds]})")
    return out


def collect_rows(args: argparse.Namespace, classes: dict[str, list[int]], overrides: list[str]) -> list[dict]:
    """Run (or reuse) every cell and tabulate each dataset's runs."""
    rows = []
    for ds, ds_classes in classes.items():
        runs = {}
        for s in args.seeds:
            for c in ds_classes:
                run_dir = (args.out / ds / f"seed{s}" / f"class{c}").resolve()
                if args.no_run and not (run_dir / "metrics.json").is_file():
                    continue
                runs[(s, c)] = run_edit(ds, s, c, run_dir, overrides, figure=(s == args.seeds[0]))
        if runs:
            rows += table_rows(ds, runs)
    return rows


def write_table(out: Path, rows: list[dict], overrides: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(rows, overrides)
    (out / "table1.md").write_text(md)
    with open(out / "table1.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(md)
    print(f"wrote {out / 'table1.md'} and {out / 'table1.csv'}")


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    try:
        classes = dataset_classes(args)
        check_user_overrides(overrides)
        if overrides:  # the cells compose with them, checked once before any run
            validate_overrides(classes, args.seeds[0], args.out, overrides)
        rows = collect_rows(args, classes, overrides)
    except KaelabError as err:
        print(f"kaelab.table1: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    if not rows:
        print("kaelab.table1: error: no runs to tabulate", file=sys.stderr)
        return 2
    write_table(args.out, rows, overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
