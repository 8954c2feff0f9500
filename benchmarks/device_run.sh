#!/usr/bin/env bash
# Every GPU figure the detector and identity issues ask for, in one call on a lent GPU machine
# (its own python3 with torch; no pip, no ../shared). Prepare here, then run there:
#
#   .venv/bin/python benchmarks/device_pack.py                  # here: .device_pack/ (git-ignored)
#   run(command="bash benchmarks/device_run.sh", carry=[".device_pack"], timeout_s=540)
#
# Logs and JSON land in $OUT (the device tool brings that folder back). Each step has its own time
# limit and a failed step does not stop the others. About 4-5 minutes on an H200.
set -u
OUT=${OUT:-/tmp/toonface-device-out}
PY=${PY:-python3}
mkdir -p "$OUT"
export TOONFACE_SHARED="$PWD/.device_pack/shared" PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run it, log to $OUT/NAME.log, say how it ended
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "$name: exit $? in $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
}

step machine 60 bash -c "nvidia-smi; $PY -c 'import torch, torchvision, cv2; print(torch.__version__, torchvision.__version__, cv2.__version__, torch.cuda.get_device_name())'"
step check_cuda_paths 120 $PY benchmarks/check_cuda_paths.py
step detector_640_b64 150 $PY benchmarks/bench_detector.py --size 640 --batch 64
step detector_640_b256 90 $PY benchmarks/bench_detector.py --size 640 --batch 256 --skip-stock
step identity_1m 240 $PY benchmarks/bench_identity.py --crops 8192 --vectors 1000000
tail -n 3 "$OUT"/*.log
