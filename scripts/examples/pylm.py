"""A small byte-level transformer language model (GPT-style), a sequence network kaelab has never seen.

Tokens are bytes (vocabulary 256). ``embed`` maps ``[B, T]`` byte ids to the residual stream
``[B, T, dim]`` (token + learned position embedding), ``blocks`` are pre-LayerNorm causal blocks
(x + attn(LN(x)), then + MLP(LN(.))), ``head`` is a final LayerNorm and a linear read-out applied
position by position, so ``forward == head(blocks[-1](... blocks[0](embed(tokens))))`` and the
trajectory is named in the model config (conf/model/pylm.yaml):
``trajectory: {stages: [embed, "blocks.*"], head: head}``. Kaelab never imports this file: Hydra
builds it from ``model.net._target_: scripts.examples.pylm.PyLM``.

``LMReport`` (a Lightning callback, ``callbacks.lm_report`` in conf/experiment/pylm.yaml) adds the
language-model reading of the test results to the run's metrics.json: bits per byte, a generated
sample, and the data's manifest.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn


class TokenEmbed(nn.Module):
    """Byte ids ``[B, T]`` -> residual stream ``[B, T, dim]``: token embedding + learned positions."""

    def __init__(self, vocab_size: int, context: int, dim: int):
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(0.02 * torch.randn(context, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[-1]
        if t > self.context:
            raise ValueError(f"sequence of {t} tokens exceeds the context of {self.context}")
        return self.tok(tokens.long()) + self.pos[:t]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t attends to positions <= t only."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads={heads} does not divide dim={dim}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm causal transformer block: x + attn(LN(x)), then + MLP(LN(.))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LMHead(nn.Module):
    """Final LayerNorm + linear read-out to byte logits, position-wise: ``[..., dim] -> [..., vocab]``."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.norm, self.fc = nn.LayerNorm(dim), nn.Linear(dim, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x))


class PyLM(nn.Module):
    """Byte-level causal transformer: ``forward(tokens [B, T]) -> logits [B, T, vocab]``, T <= context;
    logits at position t predict byte t + 1 from bytes 0..t."""

    def __init__(self, vocab_size: int = 256, context: int = 128, dim: int = 192, depth: int = 4,
                 heads: int = 6, mlp_ratio: int = 4):  # fmt: skip
        super().__init__()
        self.vocab_size, self.context = vocab_size, context
        self.embed = TokenEmbed(vocab_size, context, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.head = LMHead(dim, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    @torch.no_grad()
    def generate(self, prompt: bytes, n: int, temperature: float = 0.8, seed: int = 0) -> bytes:
        """``prompt`` followed by ``n`` sampled bytes (softmax(logits / temperature); greedy at 0),
        reading at most the last ``context`` bytes; seeded, so a model gives the same text twice."""
        if not prompt:
            raise ValueError("generate needs a non-empty prompt")
        was_training = self.training
        self.eval()
        gen = torch.Generator().manual_seed(seed)
        device = next(self.parameters()).device
        out = list(prompt)
        for _ in range(n):
            window = torch.tensor(out[-self.context :], device=device).unsqueeze(0)
            logits = self(window)[0, -1].float().cpu()
            if temperature <= 0:
                nxt = int(logits.argmax())
            else:
                nxt = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen))
            out.append(nxt)
        self.train(was_training)
        return bytes(out)


class LMReport(Callback):
    """Adds to the test results (``pl_module.test_results``, what metrics.json holds) when testing
    ends: ``lm/bits_per_byte`` = ``test/nll`` / ln 2 (nats per byte -> bits per byte: the tokens
    are bytes), ``lm/next_byte_acc`` (``test/acc``: the next byte's top-1 accuracy over every test
    position), ``lm/sample`` (``n`` bytes generated after ``prompt``, decoded as UTF-8), and the
    datamodule's ``manifest()`` as ``data/*``; the corpus's file list goes to ``corpus_files.tsv``
    in the run directory (split, bytes, path)."""

    def __init__(self, prompt: str = "def ", n: int = 300, temperature: float = 0.8, seed: int = 0):
        self.prompt, self.n, self.temperature, self.seed = prompt.encode(), n, temperature, seed

    def on_test_end(self, trainer, pl_module) -> None:
        results = pl_module.test_results
        if "test/nll" in results:
            results["lm/bits_per_byte"] = results["test/nll"] / math.log(2)
        if "test/acc" in results:
            results["lm/next_byte_acc"] = results["test/acc"]
        net = pl_module.net
        if hasattr(net, "generate") and self.n > 0:
            text = net.generate(self.prompt, self.n, temperature=self.temperature, seed=self.seed)
            results["lm/sample"] = text.decode("utf-8", errors="replace")
        dm = trainer.datamodule
        if hasattr(dm, "manifest"):
            manifest = dm.manifest()
            results["data/files"], results["data/sha256"] = manifest["files"], manifest["sha256"]
            results.update({f"data/bytes_{split}": n for split, n in manifest["bytes"].items()})
            lines = [f"{split}\t{n}\t{rel}" for split, rel, n in dm.files()]
            Path(trainer.default_root_dir).mkdir(parents=True, exist_ok=True)
            (Path(trainer.default_root_dir) / "corpus_files.tsv").write_text("\n".join(lines) + "\n")
