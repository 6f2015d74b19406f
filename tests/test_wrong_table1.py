"""Table 1's rows (kaelab.table1.table_rows) from hand-made cells over two seeds, every column
checked against the cells' own numbers (tests/test_table1_trust.py runs the driver on files).

Wrong implementations this catches: the edited class's accuracy after the edit showing the value
before; the worst seed's accuracy after the edit being the best seed's; the KAE's top-1 taken after
the edit; the retained column's before / after swapped; the base model's top-1 from another metric.
"""

from __future__ import annotations

from kaelab.table1 import fmt, table_rows


def cell(base: float, kae: float, per_class_before: list[float], per_class_after: list[float], retain: tuple):
    return {
        "base/acc": base,
        "edit/acc_before": kae,
        "edit/acc_after": kae - 0.3,
        "edit/acc_per_class_before": per_class_before,
        "edit/acc_per_class_after": per_class_after,
        "edit/retain_acc_before": retain[0],
        "edit/retain_acc_after": retain[1],
        "edit/time_s": 0.5,
    }


def test_every_column_is_its_own_metric_over_the_seeds():
    runs = {
        (0, 1): cell(0.99, 0.98, [0.97, 0.96, 0.95], [0.90, 0.10, 0.94], (0.96, 0.93)),
        (1, 1): cell(0.97, 0.96, [0.97, 0.92, 0.95], [0.90, 0.30, 0.94], (0.95, 0.91)),
    }
    (row,) = table_rows("yinyang", runs)
    assert row["target"] == "Class 1 (Yang)" and row["n_seeds"] == 2
    assert row["base_top1"] == fmt([0.99, 0.97])
    assert row["kae_top1"] == fmt([0.98, 0.96])
    assert row["class_before"] == fmt([0.96, 0.92])
    assert row["class_after"] == fmt([0.10, 0.30])
    assert row["retain_before"] == fmt([0.96, 0.95]) and row["retain_after"] == fmt([0.93, 0.91])
    assert row["max_class_after"] == "30.00"  # the worst seed: the highest accuracy left on the class
