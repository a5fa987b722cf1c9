"""Print the peak memory an upload check costs for a decompression bomb: one hour of silence as a small FLAC.

Usage: .venv/bin/python bench/audio_bomb.py [--repo PATH] [--minutes 60] [--rate 48000] [--channels 1]
``--repo`` measures another checkout's ``core.audio`` (e.g. main before the fix). Each check runs in a fresh
process, so the figure is that process's peak RSS before and after ``audio.inspect`` (the upload check).
Two bombs: one whose header declares its length, one whose header hides it (a streamed FLAC).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

CHILD = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from core import audio
data = open(sys.argv[2], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    audio.inspect(data, min_s=0.1, max_s=30.0)
    code = "accepted"
except audio.AudioError as exc:
    code = exc.code
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"code": code, "rss_before_mb": before / 1024, "rss_peak_mb": after / 1024}))
"""


def silence_flac(minutes: float, rate: int, channels: int, *, hide_length: bool) -> bytes:
    buffer = io.BytesIO()
    block = np.zeros((rate * 10, channels), dtype=np.int16)
    with sf.SoundFile(buffer, "w", rate, channels, format="FLAC", subtype="PCM_16") as f:
        for _ in range(int(minutes * 6)):
            f.write(block)
    data = bytearray(buffer.getvalue())
    if hide_length:
        # STREAMINFO's 36-bit total-samples field (bytes 18..25 of the file) set to 0 = "unknown".
        packed = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
        data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=48_000)
    parser.add_argument("--channels", type=int, default=1)
    args = parser.parse_args()
    for hide in (False, True):
        data = silence_flac(args.minutes, args.rate, args.channels, hide_length=hide)
        with tempfile.NamedTemporaryFile(suffix=".flac") as handle:
            handle.write(data)
            handle.flush()
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(args.repo), handle.name], capture_output=True, text=True, check=True
            )
        result = json.loads(out.stdout)
        label = "length hidden" if hide else "length declared"
        print(
            f"{args.minutes:g} min silence FLAC, {label}: {len(data) / 1024:.0f} kB -> {result['code']}; "
            f"peak RSS {result['rss_before_mb']:.0f} MB before the check, {result['rss_peak_mb']:.0f} MB after "
            f"(+{result['rss_peak_mb'] - result['rss_before_mb']:.0f} MB)  [{args.repo}]"
        )


if __name__ == "__main__":
    main()
