"""The papers' headline numbers (KAE paper, Table 1 and App. D; Koopman layers paper for DMD), by
experiment name and metrics.json key, for the report's "this run vs paper" table.

A value is the paper's number as printed (accuracies in percent), or a dict by ``edit.target_class``
for the edit numbers, which the paper gives per forgotten class.
"""

from __future__ import annotations

from typing import Any

# (experiment name, metric key) -> (paper value, or {target class: value}; what the paper measured)
PAPER: dict[tuple[str, str], tuple[Any, str]] = {
    ("yinyang_kae", "base/test_acc"): ("99.31", "ResMLP top-1, on training data (98.67 on fresh data)"),
    ("yinyang_kae", "kae/test_acc"): ("98.75 (0.15)", "KAE surrogate top-1, 5 seeds, training data"),
    ("yinyang_mlp", "test/acc"): ("99.31", "ResMLP top-1, on training data (98.67 on fresh data)"),
    ("mnist_kae", "base/test_acc"): ("99.03", "ResMLP top-1"),
    ("mnist_kae", "kae/test_acc"): ("98.53 (0.04)", "KAE surrogate top-1, 5 seeds"),
    ("mnist_mlp", "test/acc"): ("99.03", "ResMLP top-1"),
    ("yinyang_dmd", "dmd/base_test_acc"): ("98.4", "original MLP"),
    ("yinyang_dmd", "dmd/test_acc"): ("97.3", "DMD replacement"),
    ("mnist_dmd", "dmd/base_test_acc"): ("97.2", "original MLP"),
    ("mnist_dmd", "dmd/test_acc"): ("95.8", "DMD replacement"),
    ("mnist_edit", "edit/forget_acc_before"): ({1: "99.23", 4: "98.29", 7: "98.01"}, "forgotten class, before"),
    ("mnist_edit", "edit/forget_acc_after"): ({1: "0.0", 4: "0.0", 7: "0.0"}, "forgotten class, after"),
    ("yinyang_edit", "edit/forget_acc_before"): (
        {0: "98.78", 1: "98.27", 2: "99.97"},
        "forgotten class, before (training data)",
    ),
    ("yinyang_edit", "edit/forget_acc_after"): (
        {0: "85.01", 1: "78.88", 2: "62.52"},
        "forgotten class, after (training data)",
    ),
    ("mnist_topology", "topology/beta0_layers"): ("368, 10, 1, 1, 1", "beta_0 of the MLP layers at eps 0.166"),
}


def paper_value(name: str, key: str, metrics: dict[str, Any]) -> tuple[str, str] | None:
    """(the paper's value, what it measured) for ``key`` of experiment ``name``; None if the paper
    has no such number (or none for this run's forgotten class)."""
    entry = PAPER.get((name, key))
    if entry is None:
        return None
    value, note = entry
    if isinstance(value, dict):
        cls = metrics.get("edit/target_class")
        cls = cls[0] if isinstance(cls, list) and len(cls) == 1 else cls  # one forgotten class: the paper's case
        if not isinstance(cls, int) or cls not in value:
            return None
        return value[cls], f"{note}, class {cls}"
    return value, note


def paper_keys(name: str) -> list[str]:
    """The metric keys the paper reports for experiment ``name``."""
    return [key for exp, key in PAPER if exp == name]
