"""CPU ms per second of audio for the server model, the device screen and the seed-style ResNet-34, in one run.

Every round measures each model in turn on the same synthetic 10-s clips (one torch thread, BLAS limited to
one thread, CPU time so other load on the machine counts less), and the table shows the median and the spread
(min-max) over the rounds. Features are included: decoding is not (the clip is already samples).

    .venv/bin/python bench/detectors.py [--server detection/weights/mn04-gun.pt]
        [--device detection/weights/gwcnn-student.pt] [--rounds 5] [--input-sr 16000]

Targets: server <= 10 ms, device screen <= 1 ms per second of audio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import features
from core.benchmark import _cpu_ms, _seed, synthetic_clip
from core.classifier import Classifier
from core.features import FeatureParams
from core.networks import ResNet34
from detection.classify import BUNDLED_WEIGHTS, WEIGHTS_DIR

DEVICE_DEFAULT = next(
    (p for p in (WEIGHTS_DIR / "gwcnn-student.pt", WEIGHTS_DIR / "gwcnn-1.pt") if p.is_file()),
    WEIGHTS_DIR / "gwcnn-1.pt",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", type=Path, default=BUNDLED_WEIGHTS)
    parser.add_argument("--device", type=Path, default=DEVICE_DEFAULT)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="clips per measurement")
    parser.add_argument("--clip-s", type=float, default=10.0)
    parser.add_argument("--input-sr", type=int, default=16000, help="sample rate of the clips fed in")
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1)
    server, device = Classifier.load(args.server), Classifier.load(args.device)
    clip = synthetic_clip(args.clip_s, args.input_sr)
    resnet = ResNet34().eval()
    seed_params = FeatureParams()
    seed_clip = clip if args.input_sr == seed_params.sample_rate else synthetic_clip(args.clip_s, 16000)
    runs: dict[str, list[float]] = {"server": [], "device_screen": [], "seed_resnet34": []}
    for _ in range(args.rounds):
        runs["server"].append(_cpu_ms(lambda: _ours_at(server, clip, args.input_sr), args.repeats) / args.clip_s)
        runs["device_screen"].append(_cpu_ms(lambda: _ours_at(device, clip, args.input_sr), args.repeats) / args.clip_s)
        runs["seed_resnet34"].append(_cpu_ms(lambda: _seed(seed_params, resnet, seed_clip), 1) / args.clip_s)
    table = {
        name: {"median": round(statistics.median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3),
               "runs": [round(x, 3) for x in v]}
        for name, v in runs.items()
    }  # fmt: skip
    names = {"server": f"{server.architecture} ({args.server.name})", "device_screen": f"{device.architecture} "
             f"({args.device.name})", "seed_resnet34": "ResNet-34 224x224 (seed style)"}  # fmt: skip
    print(json.dumps({"input_sr": args.input_sr, "clip_s": args.clip_s, "rounds": args.rounds, **table}, indent=2))
    print(f"{'model':<40} {'ms CPU / s audio':>18} {'spread':>16}")
    for key, row in table.items():
        print(f"{names[key]:<40} {row['median']:>18.3f} {row['min']:>7.3f}-{row['max']:<8.3f}")


def _ours_at(clf: Classifier, clip: np.ndarray, sr: int) -> None:
    """The classifier's own pipeline (resampling to its rate included) and network, as the server runs it."""
    clf.window_scores(features.windows(clip, sr, clf.params))


if __name__ == "__main__":
    main()
