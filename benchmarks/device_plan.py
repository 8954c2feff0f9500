"""How many epochs fit in a GPU call's minutes, from a short probe run of train-detector
(benchmarks/device_train.sh): ``python benchmarks/device_plan.py PROBE_LOG PACK BATCH MINUTES``
prints the epochs.

The rate is taken between the probe's step-50 and step-100 log lines, so that loader start-up and
the first steps' kernel tuning (seconds, against a fraction of a second a step) do not count; a probe
too short for two lines falls back to its summary (start-up included: fewer epochs than would fit).
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

STEP_LINE = re.compile(r"^epoch \d+ step (\d+)/\d+ .* (\d+)s$")


def seconds_per_step(log: str) -> float:
    marks = [(int(m[1]), float(m[2])) for m in map(STEP_LINE.match, log.splitlines()) if m]
    if len(marks) >= 2:
        (s0, t0), (s1, t1) = marks[-2], marks[-1]
        return max(t1 - t0, 1.0) / (s1 - s0)  # the log has whole seconds
    summary = json.loads([line for line in log.splitlines() if line.startswith('{"steps"')][-1])
    return summary["seconds"] / summary["steps"]


def planned_epochs(log: str, images: int, batch: int, minutes: float) -> float:
    steps_per_epoch = math.ceil(images / batch)
    return round(min(60.0, max(0.2, minutes * 60 / seconds_per_step(log) / steps_per_epoch)), 2)


if __name__ == "__main__":
    log, pack, batch, minutes = Path(sys.argv[1]).read_text(), Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    print(planned_epochs(log, sum(1 for _ in (pack / "images").iterdir()), batch, minutes))
