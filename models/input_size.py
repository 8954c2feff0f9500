"""The detector's input-size rule, in a module without torch so the CLI can check a size instantly."""

from __future__ import annotations


def check_input_size(size: int) -> int:
    """A letterbox side the network takes: a multiple of 32 (as in training), 128 to 2048."""
    if isinstance(size, bool) or int(size) != size or size % 32 or not 128 <= size <= 2048:
        raise ValueError(f"detector input size must be a multiple of 32 between 128 and 2048, got {size!r}")
    return int(size)
