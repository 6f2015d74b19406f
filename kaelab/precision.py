"""Training precision: ``trainer.precision`` (Lightning's names) with ``auto``, and the fp32 islands.

``auto`` resolves to ``bf16-mixed`` where the hardware multiplies bf16 matrices natively (a CUDA
device with bf16 support, or a CPU with AVX512-BF16 or AMX-BF16 instructions; detected, not
assumed) and to ``32-true`` elsewhere. The resolved value is what trains and what keys the cache
(a bf16 model is another artifact than an fp32 one).

Under ``bf16-mixed`` Lightning runs forward passes under ``torch.autocast``, so matrix products
run in bf16. The numerically delicate parts stay in fp32 whatever the setting, inside ``fp32()``:
the KAE operator's matrix exponential and its powers (kaelab.koopman.operator) and the isometry
loss's pairwise distances (kaelab.koopman.kae); preprocessing, EMMET, the spectrum, topology and
every evaluation run outside any autocast region (and in float64 where they say so).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "64-true", "bf16-true", "32", "16", "bf16", "64")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 matrix instructions


@functools.cache
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has native bf16 matrix instructions (x86 AVX512-BF16 or AMX-BF16)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(f in flags for f in CPU_BF16_FLAGS)


def bf16_supported(accelerator: str) -> bool:
    """Native bf16 matrix products on ``accelerator`` (Lightning's name: cpu, gpu, cuda, auto)."""
    import torch

    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return cpu_has_bf16()


def resolve_precision(precision: str, accelerator: str = "cpu") -> str:
    """``trainer.precision`` as Lightning takes it: ``auto`` -> ``bf16-mixed`` where
    ``bf16_supported(accelerator)``, else ``32-true``; any other value as given."""
    precision = str(precision)
    if precision != "auto":
        return precision
    return "bf16-mixed" if bf16_supported(accelerator) else "32-true"


@contextlib.contextmanager
def fp32():
    """No autocast inside (CPU and CUDA), and full-precision float32 products (TF32 off while
    inside): what is computed here runs in the dtype of its inputs, which the callers make float32
    (or float64)."""
    import torch

    matmul = torch.get_float32_matmul_precision()
    with contextlib.ExitStack() as stack:
        for device in ("cpu", "cuda"):
            if torch.is_autocast_enabled(device):
                stack.enter_context(torch.autocast(device, enabled=False))
        if matmul != "highest":
            torch.set_float32_matmul_precision("highest")
            stack.callback(torch.set_float32_matmul_precision, matmul)
        yield


TF32_ENV = "KAELAB_TF32"  # "1": float32 products in TF32 on a CUDA card that has it (scripts/gpu_mnist_kae.py)


def configure_matmul(environ: dict[str, str] | None = None) -> str:
    """Float32 matrix products at ``high`` precision (TF32 on CUDA cards that have it) when
    ``$KAELAB_TF32`` is ``1``, else torch's default; returns the precision set. The fp32 islands
    (``fp32()``) stay at full precision either way."""
    import os

    import torch

    env = os.environ if environ is None else environ
    precision = "high" if env.get(TF32_ENV) == "1" else "highest"
    torch.set_float32_matmul_precision(precision)
    return precision
