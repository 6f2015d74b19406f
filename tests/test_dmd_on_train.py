"""`+dmd=...` on a base-model training run: DMDReplacement runs when the fit ends."""

import json

from conftest import FAST, run_cfg


def test_train_task_with_dmd_callback(tmp_path):
    m = run_cfg(
        [
            "+experiment=yinyang_binary_mlp",
            "+dmd=default",
            "data.n_train=600",
            "data.n_val=100",
            "data.n_test=200",
            "model.epochs=20",
            "dmd.scaling.epochs=2",
            "dmd.n_fit=200",
            "dmd.figures=false",
            *FAST,
        ],
        tmp_path,
    )
    # the callback scored the model the fit just produced, not another one
    assert abs(m["dmd/base_test_acc"] - m["test/acc"]) < 1e-6
    # dmd=default: hidden layer 1 scaled by 10 new layers -> 12 states; h = 2 seeds 3 of them, the
    # operator carries the other 9 transitions, of which one is the MLP's own (the scaled layer)
    assert (m["dmd/n_states"], m["dmd/span_transitions"], m["dmd/h"]) == (12, 11, 2)
    assert (m["dmd/layers_replaced"], m["dmd/original_layers_replaced"]) == (9, 1)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["dmd/test_acc"] == m["dmd/test_acc"]
    assert (tmp_path / "run" / "dmd" / "dmd_grid.csv").is_file()
