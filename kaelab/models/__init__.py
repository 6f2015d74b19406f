"""Base networks (residual and plain MLPs), the trajectory view of any network, and the
classifier LightningModule that trains them."""

from kaelab.models.classifier import Classifier
from kaelab.models.factory import build_net
from kaelab.models.mlp import MLP
from kaelab.models.resmlp import ResBlock, ResMLP
from kaelab.models.trajectory import Trajectory, stage_names

__all__ = ["MLP", "Classifier", "ResBlock", "ResMLP", "Trajectory", "build_net", "stage_names"]
