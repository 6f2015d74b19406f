"""Sending figures to the configured loggers (W&B images, TensorBoard images; CSV takes none)."""

from __future__ import annotations

from pathlib import Path


def log_images(loggers, images: dict[str, Path], step: int = 0) -> None:
    """Send PNG files to the loggers that take images (W&B, TensorBoard); CSV takes none."""
    for lg in loggers:
        name = type(lg).__name__
        if name == "WandbLogger":
            lg.log_image(key="figures", images=[str(p) for p in images.values()], caption=list(images), step=step)
        elif name == "TensorBoardLogger":
            import matplotlib.pyplot as plt
            import numpy as np

            for key, p in images.items():
                img = plt.imread(str(p))
                lg.experiment.add_image(key, np.asarray(img)[..., :3], step, dataformats="HWC")
