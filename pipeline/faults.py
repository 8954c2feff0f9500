"""What one bad input may cost: itself, never the run. A stage that raises on an input gives that
input an `internal_error` row; only faults of the run itself (disk, memory, manifest) fail the run."""

from __future__ import annotations

import errno
import os

from data_manifest.store import ManifestError
from pipeline.sources.library import safe_name
from pipeline.store import sha256_bytes

# Errors that are the run's own (the disk, the manifest), not one input's: these still fail the run.
RUN_FAULT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def is_run_fault(exc: BaseException) -> bool:
    return isinstance(exc, (MemoryError, ManifestError)) or (isinstance(exc, OSError) and exc.errno in RUN_FAULT_ERRNOS)


def describe(exc: BaseException) -> str:
    """`detail` text of an internal_error row: the exception type first, so rows can be grouped by it."""
    return safe_name(f"{type(exc).__name__}: {exc}")[:1000]


def guarded(process, work, ctx, on_failure=None):
    """`process(work, ctx)`; if it fails on something other than a run fault, `on_failure(work, ctx,
    detail)` (default: the shard's `record_failure`) writes internal_error rows for its inputs instead,
    and the run goes on. A rerun retries them: nothing of theirs is cached."""
    try:
        return process(work, ctx)
    except Exception as exc:
        if is_run_fault(exc):
            raise
        if on_failure is None:
            return work.record_failure(ctx, describe(exc))
        return on_failure(work, ctx, describe(exc))


def inject_fault(datas: list[bytes]) -> None:
    """Fault injection for the tests: TOONFACE_FAULT_RAISE_ON=<sha256> makes the analysis of those
    bytes raise, as an unknown bug in a stage would."""
    target = os.environ.get("TOONFACE_FAULT_RAISE_ON")
    if target and any(sha256_bytes(data) == target for data in datas):
        raise RuntimeError(f"injected fault on {target[:12]}")
