"""Detection speed: images/s of our batched RetinaNet path and of stock torchvision, same run, same images.

    .venv/bin/python benchmarks/bench_detector.py [--size 640] [--batch 8] [--weights PATH] [--precision auto|bf16|fp32]

Images: real iCartoonFace val frames (../shared), decoded and letterboxed to --size before the clock
starts ("end to end from decoded tensors": normalisation, network, box decoding, NMS and the copy of the
boxes back to the host are inside the clock). Everything runs channels_last; ``--precision auto`` (the
pipeline's choice, models/precision.py) runs bf16 on CUDA and on CPUs that compute bf16 natively
(AVX512-BF16, AMX), else fp32; the stock model runs in the same precision. On CUDA the batch defaults
to 64, on the CPU to 8 with torch's threads.

Rows:
* ``ours <backbone>``: models.detector.FaceDetector.forward_letterboxed (batched post-processing; the
  body's norms folded into its convolutions, as load_detector does).
* ``stock torchvision retinanet_resnet50_fpn``: the unmodified model(images) call on the same
  letterboxed images (its transform, per-image post-processing), random weights with one class.
* ``backbone+heads only``: our network without any post-processing (the ceiling).
Also printed: letterbox (decode excluded) images/s on the CPU, and peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from models.detector import FaceDetector, build_retinanet, letterbox, load_detector, to_tensor  # noqa: E402
from models.fold import fold_batchnorm  # noqa: E402
from models.precision import PRECISIONS, precision_name, uses_bf16  # noqa: E402
from pipeline.detect import DEFAULT_DETECTOR_WEIGHTS  # noqa: E402

SHARED = Path(os.environ.get("TOONFACE_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))


def timed(fn, repeats: int, sync) -> float:
    fn()  # warm-up (cuDNN autotune, allocator)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeats


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--batch", type=int)
    p.add_argument("--repeats", type=int)
    p.add_argument("--weights", default=str(DEFAULT_DETECTOR_WEIGHTS))
    p.add_argument("--skip-stock", action="store_true")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    batch = args.batch or (64 if cuda else 8)
    repeats = args.repeats or (20 if cuda else 2)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.backends.cudnn.benchmark = True
    bf16 = uses_bf16(args.precision, device)

    paths = sorted((SHARED / "data" / "icartoonface_det" / "images" / "val").glob("*.jpg"))
    decoded = [cv2.imread(str(pth)) for pth in paths[:batch]]
    while len(decoded) < batch:
        decoded += decoded[: batch - len(decoded)]
    t0 = time.perf_counter()
    boxed = np.stack([letterbox(img, args.size)[0] for img in decoded])
    letterbox_s = time.perf_counter() - t0
    x_host = to_tensor(boxed)
    x_dev = x_host.to(device)
    rows = []
    print(
        f"device: {torch.cuda.get_device_name() if cuda else 'cpu'} ({torch.get_num_threads()} threads), "
        f"{'bf16' if bf16 else 'fp32'}, size {args.size}, batch {batch}, repeats {repeats}; letterbox on the CPU: "
        f"{batch / letterbox_s:.1f} images/s",
        flush=True,
    )

    shipped = load_detector(args.weights)  # run at --size (the network is fully convolutional)
    detectors = [
        (
            f"ours {shipped.backbone} (shipped weights, stored size {shipped.size} px)",
            FaceDetector(
                shipped.model, backbone=shipped.backbone, size=args.size, device=device, precision=args.precision
            ),
        )
    ]
    r50 = build_retinanet("resnet50", args.size)
    fold_batchnorm(r50.eval(), r50.backbone.body)  # as load_detector runs any trained file
    detectors.append(
        (
            "ours resnet50 (untrained)",
            FaceDetector(r50, backbone="resnet50", size=args.size, device=device, precision=args.precision),
        )
    )
    for name, det in detectors:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds = timed(lambda det=det: [r.cpu() for r in det.forward_letterboxed(x_dev)], repeats, sync)
        rows.append(
            {
                "what": name,
                "images_per_s": batch / seconds,
                "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            }
        )

        seconds = timed(lambda det=det: det.network_outputs(x_dev), repeats, sync)
        rows.append({"what": name + ": backbone+heads only", "images_per_s": batch / seconds})
        print(json.dumps(rows[-2]), json.dumps(rows[-1]), flush=True)

    if not args.skip_stock:
        from torchvision.models.detection import retinanet_resnet50_fpn

        stock = (
            retinanet_resnet50_fpn(
                weights=None, weights_backbone=None, num_classes=1, min_size=args.size, max_size=args.size
            )
            .eval()
            .to(device)
        )
        stock = stock.to(memory_format=torch.channels_last)
        images = [t for t in (x_dev.float() / 255)]
        if cuda:
            torch.cuda.reset_peak_memory_stats()

        def stock_forward():
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = stock(images)
            [o["boxes"].cpu() for o in out]

        seconds = timed(stock_forward, repeats, sync)
        rows.append(
            {
                "what": "stock torchvision retinanet_resnet50_fpn (random weights)",
                "images_per_s": batch / seconds,
                "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(
        json.dumps(
            {"size": args.size, "batch": batch, "device": str(device), "precision": precision_name(bf16), "rows": rows},
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
