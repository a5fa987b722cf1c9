"""How often the device agent's trigger fires on the labelled clips, per category, and what it costs.

Each clip is played after 1 s of quiet noise (-70 dBFS), so its own start is a real onset the trigger must
judge: a steady sound switching on must not fire, a shot must. Prints fire rates per label and category,
the feature percentiles of what fired (with ``--permissive``, of every candidate that passed SNR), and the
CPU time per second of audio.

    .venv/bin/python bench/agent_trigger.py [--data ../shared/data] [--limit N] [--permissive]
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devices.agent.trigger import ClipCapture, TriggerSettings

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("GUNWATCH_DATA_DIR", DEFAULT_DATA)))
    parser.add_argument("--limit", type=int, default=0, help="at most N clips per label (0 = all)")
    parser.add_argument("--permissive", action="store_true", help="disable rise/decay/crest/level gates")
    args = parser.parse_args()
    manifest = args.data / "manifest.csv"
    if not manifest.exists():
        print(f"no data at {args.data}", file=sys.stderr)
        return 1
    settings = TriggerSettings()
    if args.permissive:
        settings = replace(settings, max_rise_s=1.0, decay_db=-99, crest_db=-99, min_peak_dbfs=-200)
    rows = list(csv.DictReader(manifest.open()))
    per_label: collections.Counter[str] = collections.Counter()
    fired: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    # Onsets at the splice between the quiet pad and the clip (a sound cut mid-way switching on) versus
    # onsets inside the recording itself.
    at_cut: dict[tuple[str, str], list[bool]] = collections.defaultdict(list)
    inside: dict[tuple[str, str], list[bool]] = collections.defaultdict(list)
    features: dict[str, list[tuple[float, ...]]] = collections.defaultdict(list)
    rng = np.random.default_rng(0)
    cpu_s = audio_s = 0.0
    for row in rows:
        label = row["label"]
        if args.limit and per_label[label] >= args.limit:
            continue
        per_label[label] += 1
        y, sr = sf.read(args.data / row["file"], dtype="float32", always_2d=True)
        y = y.mean(axis=1)
        pad = (rng.standard_normal(sr) * 10 ** (-70 / 20)).astype(np.float32)
        stream = np.concatenate([pad, y, pad[: sr // 2]])
        capture = ClipCapture(sr, settings)
        block = sr // 10
        t0 = time.process_time()
        clips = []
        for k in range(0, len(stream), block):
            clips += capture.feed(stream[k : k + block], k / sr)
        clips += capture.flush()
        cpu_s += time.process_time() - t0
        audio_s += len(stream) / sr
        key = (label, row["category"])
        fired[key].append(len(clips))
        cut = [abs(c.onset.sample - sr) <= 0.05 * sr for c in clips]
        at_cut[key].append(any(cut))
        inside[key].append(not all(cut))
        for clip in clips:
            o = clip.onset
            features[label].append((o.snr_db, o.rise_s * 1000, o.decay_db, o.crest_db, o.peak_dbfs))

    print(f"settings: {settings}")
    header = f"{'label':8} {'category':22} {'clips':>5} {'fired%':>7} {'at-cut%':>8} {'inside%':>8} {'onsets/clip':>11}"
    print("\n" + header)
    totals: dict[str, list[tuple[int, bool, bool]]] = collections.defaultdict(list)
    for key, counts in sorted(fired.items()):
        label, category = key
        totals[label] += list(zip(counts, at_cut[key], inside[key], strict=True))
        print(
            f"{label:8} {category:22} {len(counts):5d} {100 * np.mean([c > 0 for c in counts]):7.1f} "
            f"{100 * np.mean(at_cut[key]):8.1f} {100 * np.mean(inside[key]):8.1f} {np.mean(counts):11.2f}"
        )
    for label, rows_ in sorted(totals.items()):
        arr = np.array(rows_, dtype=float)
        print(
            f"{label:8} {'ALL':22} {len(arr):5d} {100 * np.mean(arr[:, 0] > 0):7.1f} "
            f"{100 * arr[:, 1].mean():8.1f} {100 * arr[:, 2].mean():8.1f} {arr[:, 0].mean():11.2f}"
        )
    names = ("snr_db", "rise_ms", "decay_db", "crest_db", "peak_dbfs")
    for label, values in sorted(features.items()):
        arr = np.array(values)
        print(f"\n{label}: percentiles (5/25/50/75/95) of {len(arr)} onsets")
        for i, name in enumerate(names):
            print(f"  {name:10} " + " ".join(f"{v:7.1f}" for v in np.percentile(arr[:, i], [5, 25, 50, 75, 95])))
    print(f"\nCPU: {1000 * cpu_s / audio_s:.2f} ms per second of audio ({audio_s:.0f} s of audio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
