# %% [markdown]
# # kaelab quickstart: a Koopman autoencoder of your own network
#
# This notebook (percent format: open it in Jupyter through jupytext, or run it as a script)
# takes a small residual network defined right here, trains it on MNIST for about a minute, then
# uses kaelab's public API to
#
# 1. read the network as a trajectory of named layers and extract its representations;
# 2. fit a Koopman autoencoder (KAE) between two of them: x_j ~ phi^-1(K phi(x_i)), K = exp(G/k)^k;
# 3. score the KAE as a surrogate of the layers it replaces;
# 4. edit the KAE's operator (EMMET) so the surrogate forgets one class;
# 5. plot the Betti-0 curves of the KAE's intermediate steps.
#
# Nothing here needs a config file or writes to disk, except the figure at the end.
# `QUICKSTART_SAMPLES` (training images) and `QUICKSTART_EPOCHS` (KAE epochs) shrink the run.

# %%
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import nn
from torchvision.datasets import MNIST

import kaelab as kl

torch.manual_seed(0)
N_TRAIN = int(os.environ.get("QUICKSTART_SAMPLES", 60000))
KAE_EPOCHS = int(os.environ.get("QUICKSTART_EPOCHS", 20))
OUT = Path(os.environ.get("QUICKSTART_OUT", "."))

# %% [markdown]
# ## Data: MNIST as in-memory tensors
# The four idx files must lie in `$KAELAB_DATA_DIR/MNIST/raw` (no download here).

# %%
root = os.environ.get("KAELAB_DATA_DIR", "data")


def load(train: bool, n: int | None = None):
    ds = MNIST(root, train=train, download=False)
    x = (ds.data[:n].float() / 255 - 0.1307) / 0.3081
    return x.flatten(1), ds.targets[:n]


x_train, y_train = load(True, N_TRAIN)
x_test, y_test = load(False)
print(f"train {tuple(x_train.shape)}, test {tuple(x_test.shape)}")


# %% [markdown]
# ## Your network
# Any `nn.Module` whose forward is a chain of named modules will do; kaelab needs no code of its own here.


# %%
class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return torch.relu(x + self.fc(x))


class Net(nn.Module):
    def __init__(self, width: int = 128, depth: int = 4):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(784, width), nn.ReLU())
        self.blocks = nn.Sequential(*[Block(width) for _ in range(depth)])
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.blocks(self.embed(x)))


net = Net()
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
t0 = time.perf_counter()
for _ in range(3):  # epochs
    for idx in torch.randperm(len(x_train)).split(128):
        loss = nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
net.eval()
with torch.no_grad():
    net_acc = (net(x_test).argmax(1) == y_test).float().mean().item()
print(f"network: test accuracy {net_acc:.4f} after {time.perf_counter() - t0:.0f} s of training")

# %% [markdown]
# ## 1. The network as a trajectory, and its representations
# States: the output of `embed` (x_i) and of each block; `head` maps the last one to the logits.

# %%
traj = kl.trajectory(net, x_train[:8], stages=["embed", "blocks.*"], head="head")
reps = kl.extract(traj, x_train)
source, target = "embed", "blocks.3"
print(traj.names)

# %% [markdown]
# ## 2. A KAE between the first and the last block
# Preprocess both layers (centre, project, normalise, rotate x_i onto x_j; Sec. 3.3), then fit.

# %%
prep = kl.PairPreprocessor(q=64).fit(reps[source], reps[target])
x_i, x_j = prep.transform(reps[source], reps[target])
kae = kl.KAE(k=10, hidden=[256], latent_dim=128, lr=5e-3, epochs=KAE_EPOCHS, batch_size=512)
kae.fit(x_i, x_j)
print(kae, f"fitted in {kae.fit_time_s_:.0f} s; last epoch's loss {kae.history_[-1]['train/loss']:.4f}")

# %% [markdown]
# ## 3. The KAE as a surrogate of blocks 0-3
# test x_i -> preprocess -> KAE -> inverse preprocess -> the network's head.

# %%
report = kl.surrogate_report(traj, prep, kae, x_test, y_test, source=source, target=target)
print(
    f"network {report['base/test_acc']:.4f}, surrogate {report['kae/test_acc']:.4f}, "
    f"agreement {report['kae/agreement']:.4f}, state FVU {report['kae/state_fvu']:.4f}"
)

# %% [markdown]
# ## 4. Forget digit 4 by editing the operator (EMMET, Algorithm 1)
# `emmet_edit` returns a new KAE with the edited operator K'; `kae` itself is unchanged.

# %%
edited = kl.emmet_edit(kae, x_i, x_j, y_train, forget=[4])
after = kl.surrogate_report(traj, prep, edited, x_test, y_test, source=source, target=target)
before_4, after_4 = report["kae/test_acc_per_class"][4], after["kae/test_acc_per_class"][4]
retained = [c for c in range(10) if c != 4]
retain_before = sum(report["kae/test_acc_per_class"][c] for c in retained) / 9
retain_after = sum(after["kae/test_acc_per_class"][c] for c in retained) / 9
print(f"digit 4: {before_4:.4f} -> {after_4:.4f}; other digits (mean): {retain_before:.4f} -> {retain_after:.4f}")

# %% [markdown]
# ## 5. Topology of the KAE's steps: Betti-0 curves
# The decoded intermediate states phi^-1(A^t phi(x_i)), A = exp(G/k), t = 0..k, of 1000 test
# points; beta_0(eps) counts the connected components of each step's eps-neighbourhood graph.

# %%
test_x_i = prep.transform_source(kl.extract(traj, x_test[:1000], [source])[source])
steps = kae.decoded_steps(test_x_i)  # [k + 1, 1000, 64]
grid = kl.eps_grid(0.0, float(torch.cdist(steps[-1], steps[-1]).max()) / 2, 80)
curves = {t: kl.betti_curves(steps[t], grid, maxdim=0)[0] for t in range(0, len(steps), 2)}
eps = float(grid[(curves[len(steps) - 1] <= 10).argmax()])  # where the last step is down to 10 components
fig, ax = plt.subplots(figsize=(6, 4))
colors = plt.cm.viridis(torch.linspace(0, 1, len(steps)).numpy())
for t, curve in curves.items():
    ax.plot(grid, curve, color=colors[t], label=f"step {t}")
ax.axvline(eps, color="grey", linestyle=":", label=f"eps = {eps:.2f}")
ax.set(xlabel="filtration value eps", ylabel="beta_0 (connected components)", yscale="log")
ax.set_title("Betti-0 curves of the KAE's decoded steps (1000 test points)")
ax.legend(title="KAE step", fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "quickstart_betti0.png", dpi=120)
print(f"beta_0 at eps={eps:.3f} through the steps:", kl.beta0_path(steps, eps).tolist())
