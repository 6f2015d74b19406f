"""Base networks (App. B), weight-decay groups and the one-cycle triangular LR."""

import pytest
import torch
from torch import nn

from kaelab.errors import ConfigError
from kaelab.koopman.representations import extract
from kaelab.models import MLP, ResMLP, Trajectory, build_net, stage_names
from kaelab.models.classifier import decay_param_groups
from kaelab.schedules import triangular_factor


def test_resmlp_matches_the_reference_architecture():
    net = ResMLP(784, 784, 4, 10)
    assert stage_names(net) == ["input_layer", "blocks.0", "blocks.1", "blocks.2", "blocks.3"]
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
    x = torch.randn(16, list(net.parameters())[0].shape[1])  # the first Linear's input width
    traj = Trajectory.of(net, x[:2])
    reps = extract(traj, x, traj.names)
    for name, h in reps.items():
        torch.testing.assert_close(traj.forward_from(name, h), net(x))


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


def test_a_net_config_without_a_target_is_a_one_line_error():
    """Catches a factory that guesses a network from other keys (an ``arch:`` name) instead of
    asking for the ``_target_`` it builds."""
    with pytest.raises(ConfigError, match=r"^model\.net needs a _target_"):
        build_net({"arch": "resmlp", "in_dim": 2, "width": 4, "n_blocks": 2, "out_dim": 3})


def test_target_nets_and_their_errors():
    net = build_net({"_target_": "kaelab.models.ResMLP", "in_dim": 2, "width": 4, "n_blocks": 2, "out_dim": 3})
    assert isinstance(net, ResMLP) and len(net.blocks) == 2
    with pytest.raises(ConfigError, match=r"model\.net\._target_='kaelab\.models\.ResMLPP' cannot be imported"):
        build_net({"_target_": "kaelab.models.ResMLPP", "in_dim": 2})
    with pytest.raises(ConfigError, match=r"model\.net\.n_blocks is missing"):
        build_net({"_target_": "kaelab.models.ResMLP", "in_dim": 2, "width": 4, "out_dim": 3})
    with pytest.raises(ConfigError, match=r"model\.net\.depth: kaelab\.models\.MLP takes no argument 'depth'"):
        build_net({"_target_": "kaelab.models.MLP", "in_dim": 2, "hidden": [3], "out_dim": 3, "depth": 2})


class _Chain(nn.Module):
    """A user's network with a 3-d state (tokens x dim) and a declared-by-config trajectory."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.blocks = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
        self.out = nn.Sequential(nn.Flatten(1), nn.Linear(8, 3))

    def forward(self, x):
        return self.out(self.blocks(self.embed(x).view(-1, 2, 4)))


def test_trajectory_of_a_user_network_flattens_states_and_checks_the_chain():
    net = _Chain().eval()
    x = torch.randn(5, 6)
    # the view inside forward is not a module: a chain embed -> blocks.* -> out misses it
    with pytest.raises(ConfigError, match="cannot take the previous stage's output|does not reproduce"):
        Trajectory.of(net, x, {"stages": ["embed", "blocks.*"], "head": "out"})
    net.embed = nn.Sequential(nn.Linear(6, 8), nn.Unflatten(1, (2, 4)))
    traj = Trajectory.of(net, x, {"stages": ["embed", "blocks.*"], "head": "out"})
    assert traj.names == ["embed", "blocks.0", "blocks.1", "blocks.2"] and traj.widths == [8, 8, 8, 8]
    states = traj.states(x)
    assert all(s.shape == (5, 8) for s in states)
    torch.testing.assert_close(traj(x), net(x))
    torch.testing.assert_close(traj.forward_from("blocks.0", states[1]), net(x))
    with pytest.raises(ConfigError, match="has no module 'block'"):
        Trajectory.of(net, x, {"stages": ["embed", "block.*"], "head": "out"})
    with pytest.raises(ConfigError, match="model.trajectory.stages"):
        Trajectory.of(net, x)  # no spec in the config and no trajectory_spec() method
