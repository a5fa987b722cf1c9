"""Localisation error of core.geo.locate on synthetic shots.

Devices are dropped uniformly in a disc around a known source; arrival times get Gaussian timing
noise and are rounded to the millisecond, as devices report them; reported positions get GPS
noise. Prints, per device count and timing noise, how often TDOA was used and its error figures.

    .venv/bin/python bench/tdoa.py [--trials 500] [--seed 1] [--source anywhere] [--true-c 331]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.geo import SPEED_OF_SOUND_M_S, LocalFrame, Observation, haversine_m, locate

CENTRE = (40.7128, -74.0060)
T0 = 1_767_225_600.0  # an arbitrary epoch second


def simulate(
    rng: np.random.Generator,
    n_devices: int,
    timing_sigma_s: float,
    *,
    area_radius_m: float = 1000.0,
    source_anywhere: bool = False,
    speed_of_sound: float = SPEED_OF_SOUND_M_S,
) -> tuple[list[Observation], tuple[float, float]]:
    """Observations of one shot and the true source (lat, lon).

    GPS accuracy is drawn in 3..10 m and read as a 68 % horizontal radius (Android's meaning),
    i.e. a per-axis sigma of accuracy / 1.51.
    """
    frame = LocalFrame(*CENTRE)
    source = _uniform_disc(rng, area_radius_m) if source_anywhere else np.zeros(2)
    devices = (np.zeros(2) if source_anywhere else source) + np.array(
        [_uniform_disc(rng, area_radius_m) for _ in range(n_devices)]
    )
    accuracy = rng.uniform(3.0, 10.0, n_devices)
    reported = devices + rng.normal(0.0, 1.0, (n_devices, 2)) * (accuracy / 1.51)[:, None]
    arrival = T0 + np.linalg.norm(devices - source, axis=1) / speed_of_sound
    arrival = np.round(arrival + rng.normal(0.0, timing_sigma_s, n_devices), 3)
    obs = [
        Observation(*frame.to_latlon(*xy), t=float(t), gps_accuracy_m=float(a))
        for xy, t, a in zip(reported, arrival, accuracy, strict=True)
    ]
    return obs, frame.to_latlon(*source)


def _uniform_disc(rng: np.random.Generator, radius: float) -> np.ndarray:
    r, theta = radius * math.sqrt(rng.uniform()), rng.uniform(0.0, 2 * math.pi)
    return np.array([r * math.cos(theta), r * math.sin(theta)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--source", choices=["centre", "anywhere"], default="centre")
    parser.add_argument("--true-c", type=float, default=SPEED_OF_SOUND_M_S, help="speed of sound used to simulate")
    args = parser.parse_args()
    anywhere = args.source == "anywhere"

    print(
        f"source={args.source} trials={args.trials} seed={args.seed} true_c={args.true_c} "
        f"solver_c={SPEED_OF_SOUND_M_S:g}"
    )
    print(
        "devices sigma_ms  tdoa%  median_m  p95_m  max_m  within_15m%  in_radius%  median_radius_m  fallback_in_radius%"
    )
    for timing_sigma in (0.001, 0.005):
        for n in range(3, 7):
            rng = np.random.default_rng([args.seed, n, int(timing_sigma * 1e6)])
            errors, radii, fallback_hits, fallbacks = [], [], 0, 0
            for _ in range(args.trials):
                obs, (lat, lon) = simulate(rng, n, timing_sigma, source_anywhere=anywhere, speed_of_sound=args.true_c)
                est = locate(obs, timing_sigma_s=timing_sigma)
                err = haversine_m(est.lat, est.lon, lat, lon)
                if est.method == "tdoa":
                    errors.append(err)
                    radii.append(est.radius_m)
                else:
                    fallbacks += 1
                    fallback_hits += err <= est.radius_m
            e, r = np.array(errors), np.array(radii)
            print(
                f"{n:7d} {timing_sigma * 1e3:8.0f} {100 * len(e) / args.trials:6.1f}"
                f" {np.median(e):9.2f} {np.percentile(e, 95):6.2f} {e.max():6.1f} {100 * np.mean(e <= 15):12.1f}"
                f" {100 * np.mean(e <= r):11.1f} {np.median(r):16.1f}"
                f" {100 * fallback_hits / fallbacks if fallbacks else float('nan'):20.1f}"
            )


if __name__ == "__main__":
    main()
