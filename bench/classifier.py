"""Print CPU ms per second of audio for the GunWatch CNN and the seed-style ResNet-34 (one torch thread).

Usage: .venv/bin/python bench/classifier.py [--weights FILE] [--clip-s 10] [--batch 16]
Targets: <= 1 ms per second of audio for ours (features + network); >= 50x faster than the seed model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.benchmark import speed_profile
from core.classifier import Classifier
from detection.classify import BUNDLED_WEIGHTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=BUNDLED_WEIGHTS)
    parser.add_argument("--clip-s", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    clf = Classifier.load(args.weights)
    result = speed_profile(
        clf.params,
        clf.architecture,
        network=clf.network,
        clip_s=args.clip_s,
        batch=args.batch,
        repeats=args.repeats,
    )
    print(json.dumps({"weights": str(args.weights), **result}, indent=2))
    print(
        f"ours: {result['ours_ms_per_audio_s_single']:.3f} ms CPU per s of audio (single clip), "
        f"{result['ours_ms_per_audio_s_batched']:.3f} (batched x{args.batch}); "
        f"seed ResNet-34: {result['seed_resnet34_ms_per_audio_s']:.1f}; "
        f"ratio {result['speedup_single']:.0f}x"
    )


if __name__ == "__main__":
    main()
