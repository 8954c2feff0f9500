"""Which float type a network runs inference in: bf16 where the hardware computes it, fp32 elsewhere.

On a CUDA GPU and on an x86 CPU with AVX512-BF16 or AMX, bf16 convolutions run about twice as fast
as fp32 (the detector on a 2-core AMD EPYC with AVX512-BF16: 8.0 against 3.3 images/s at 576 px);
on other CPUs bf16 is emulated and slower than fp32, so "auto" keeps fp32 there.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

PRECISIONS = ("auto", "bf16", "fp32")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 among this CPU's flags (Linux /proc/cpuinfo; elsewhere: no)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", info) is not None


def uses_bf16(precision: str, device) -> bool:
    """Whether ``precision`` ("auto", "bf16" or "fp32") means bf16 on ``device`` (a torch.device or its
    name, "cpu", "cuda:0"; this module does not import torch, so the CLI can check arguments quickly)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    if precision == "auto":
        return kind == "cuda" or (kind == "cpu" and cpu_has_native_bf16())
    return precision == "bf16"


def precision_name(bf16: bool) -> str:
    """The name reports and recipes give a precision that ran: "bf16" or "fp32"."""
    return "bf16" if bf16 else "fp32"


def resolve_precision(precision: str, device) -> str:
    """What ``precision`` ("auto", "bf16" or "fp32") runs as on ``device``: "bf16" or "fp32"."""
    return precision_name(uses_bf16(precision, device))
