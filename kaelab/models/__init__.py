"""Base networks (residual and plain MLPs) and the classifier LightningModule that trains them."""

from kaelab.models.classifier import Classifier
from kaelab.models.layered import LayeredNet
from kaelab.models.mlp import MLP, build_net
from kaelab.models.resmlp import ResBlock, ResMLP

__all__ = ["MLP", "Classifier", "LayeredNet", "ResBlock", "ResMLP", "build_net"]
