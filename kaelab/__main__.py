"""``python -m kaelab [+experiment=NAME] [key=value ...]``: compose the Hydra config and run it."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from kaelab.config import check_schema, register_configs
from kaelab.errors import KaelabError

register_configs()


@hydra.main(version_base="1.3", config_path="pkg://kaelab.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    from kaelab.pipeline import run  # imported here so config errors surface before heavy imports

    try:
        check_schema(cfg)
        metrics = run(cfg)
    except KaelabError as err:
        print(f"kaelab: error: {err}", file=sys.stderr)
        sys.exit(2)
    # a scalar return value lets Hydra sweepers optimise it
    for key in ("kae/test_acc", "dmd/test_acc", "test/acc"):
        if key in metrics:
            return float(metrics[key])
    return None


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
