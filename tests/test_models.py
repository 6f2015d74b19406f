"""Base networks (App. B), weight-decay groups and the one-cycle triangular LR."""

import pytest
import torch
from torch import nn

from kaelab.errors import ConfigError
from kaelab.koopman.representations import extract
from kaelab.models import MLP, ResMLP, build_net
from kaelab.models.classifier import decay_param_groups
from kaelab.schedules import triangular_factor


def test_resmlp_matches_the_reference_architecture():
    net = ResMLP(784, 784, 4, 10)
    assert net.representation_names() == ["input_layer", "blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    assert isinstance(net.input_layer[1], nn.BatchNorm1d) and isinstance(net.input_layer[2], nn.ReLU)
    block = net.blocks[0]
    assert [type(m) for m in (block.fc1, block.bn1, block.fc2, block.bn2)] == [nn.Linear, nn.BatchNorm1d] * 2
    assert net.head.weight.shape == (10, 784)
    assert sum(isinstance(m, nn.Linear) for m in net.modules()) == 1 + 2 * 4 + 1


def test_resblock_adds_before_the_last_relu():
    block = ResMLP(3, 3, 1, 2).blocks[0].eval()
    x = torch.randn(4, 3)
    h = torch.relu(block.bn1(block.fc1(x)))
    torch.testing.assert_close(block(x), torch.relu(x + block.bn2(block.fc2(h))))


@pytest.mark.parametrize("net", [ResMLP(2, 10, 5, 3), MLP(4, [8, 6, 4, 3], 2)], ids=["resmlp", "mlp"])
def test_forward_from_any_representation_gives_the_logits(net):
    net.eval()
    x = torch.randn(16, net.stages()[0][0].in_features)
    reps = extract(net, net.representation_names(), x)
    for name, h in reps.items():
        torch.testing.assert_close(net.forward_from(name, h), net(x))


def test_plain_mlp_shapes():
    net = MLP(784, [256, 128, 64, 32], 10)
    assert [layer[0].out_features for layer in net.layers] == [256, 128, 64, 32]
    assert net(torch.randn(3, 784)).shape == (3, 10)


def test_weight_decay_only_on_linear_weights():
    net = ResMLP(2, 10, 2, 3)
    decay, no_decay = decay_param_groups(net, 5e-4)
    linear_weights = {id(m.weight) for m in net.modules() if isinstance(m, nn.Linear)}
    assert {id(p) for p in decay["params"]} == linear_weights and decay["weight_decay"] == 5e-4
    assert no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))


def test_triangular_schedule():
    values = [triangular_factor(s, 100, 0.2) for s in (0, 10, 20, 60, 100)]
    assert values == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])


def test_bad_net_configs():
    with pytest.raises(ConfigError, match="model.net.width"):
        build_net({"arch": "resmlp", "in_dim": 2, "out_dim": 3, "n_blocks": 2})
    with pytest.raises(ConfigError, match="hidden"):
        build_net({"arch": "mlp", "in_dim": 2, "out_dim": 3, "hidden": []})
    with pytest.raises(ConfigError, match="arch"):
        build_net({"arch": "cnn", "in_dim": 2, "out_dim": 3})
