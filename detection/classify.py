"""Classify audio files from the command line with the bundled weights: no database or server needed.

    python -m detection.classify FILE [FILE...] [--weights PATH] [--threshold X]

Prints one JSON object per file; an unreadable file gives {"file": ..., "error": ..., "code": ...} and a
non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.audio import AudioError
from core.classifier import Classifier
from core.weights import ModelLoadError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUNDLED_WEIGHTS = WEIGHTS_DIR / "mn04-ensemble.pt"
# Earlier defaults, still registered by a fresh install so that an admin can roll back to them.
PREVIOUS_BUNDLED = (WEIGHTS_DIR / "gwcnn-1.pt",)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detection.classify", description="Detect gunshots in audio files.")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--weights", type=Path, default=BUNDLED_WEIGHTS)
    parser.add_argument("--threshold", type=float, default=None)
    args = parser.parse_args(argv)
    try:
        classifier = Classifier.load(args.weights)
    except ModelLoadError as exc:
        print(json.dumps({"error": f"cannot load model: {exc}"}))
        return 2
    status = 0
    for path in args.files:
        try:
            result = classifier.classify_file(path, threshold=args.threshold)
        except AudioError as exc:
            print(json.dumps({"file": str(path), "error": str(exc), "code": exc.code}))
            status = 1
            continue
        print(json.dumps({"file": str(path), **result.as_dict()}))
    return status


if __name__ == "__main__":
    sys.exit(main())
