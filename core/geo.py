"""Geometry: great-circle helpers, a local metric frame, TDOA multilateration, the same-shot test,
GeoJSON point-in-polygon, and THE speed of sound every module uses.

Pure Python + numpy/scipy, so it can be tested and benchmarked on its own.

Why one ~700-line module: the joining rule (``place_arrival``, ``align_shots``) and the locator share the
same TDOA fit and tolerance model; splitting them would put one rule's halves in two files. The sections
are in reading order: distances, the local frame, the fit, the joining rule, polygons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial import ConvexHull, cKDTree
from scipy.stats import chi2

# IUGG mean Earth radius: the usual choice for spherical (haversine) distances.
EARTH_RADIUS_M = 6_371_008.8
# WGS84, used by LocalFrame because GPS positions are WGS84 and the sphere is off by up to 0.5 %.
WGS84_A = 6_378_137.0
WGS84_E2 = 6.694_379_990_14e-3

# Dry air at about 20 °C. Localisation errors grow with the temperature difference (331 m/s at 0 °C);
# every caller takes this one value so the solver, the join window and the simulator always agree.
SPEED_OF_SOUND_M_S = 343.0

Method = Literal["tdoa", "single", "centroid"]


# --- Great-circle helpers (sphere) -------------------------------------------------------------


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres on the mean-radius sphere."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def destination_point(lat: float, lon: float, bearing_deg: float, distance_m: float) -> tuple[float, float]:
    """The point reached by going `distance_m` from (lat, lon) on an initial bearing (0 = north)."""
    p1, l1, b = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    d = distance_m / EARTH_RADIUS_M
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    return math.degrees(p2), (math.degrees(l2) + 540.0) % 360.0 - 180.0


def bounding_box(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """(min_lat, min_lon, max_lat, max_lon) holding every point within `radius_m` (haversine).

    Meant for a plain `lat BETWEEN .. AND lon BETWEEN ..` prefilter that works on SQLite and
    Postgres alike, followed by an exact haversine check. When the circle reaches a pole or
    crosses the antimeridian the longitude range becomes the whole [-180, 180]: a looser but
    still correct prefilter, so callers never deal with wrapped ranges.
    """
    # A millimetre of padding so float rounding never drops a point lying exactly on the circle.
    r = (radius_m + 1e-3) / EARTH_RADIUS_M
    phi = math.radians(lat)
    min_phi, max_phi = phi - r, phi + r
    if min_phi <= -math.pi / 2 or max_phi >= math.pi / 2:
        return max(math.degrees(min_phi), -90.0), -180.0, min(math.degrees(max_phi), 90.0), 180.0
    # Widest longitude offset of the circle (at the tangent points, not at the centre's latitude).
    dl = math.degrees(math.asin(math.sin(r) / math.cos(phi)))
    if lon - dl < -180.0 or lon + dl > 180.0:
        return math.degrees(min_phi), -180.0, math.degrees(max_phi), 180.0
    return math.degrees(min_phi), lon - dl, math.degrees(max_phi), lon + dl


# --- Local metric frame (WGS84 ENU) ------------------------------------------------------------


def _ecef(lat: float, lon: float) -> np.ndarray:
    phi, lam = math.radians(lat), math.radians(lon)
    n = WGS84_A / math.sqrt(1 - WGS84_E2 * math.sin(phi) ** 2)
    return np.array(
        [
            n * math.cos(phi) * math.cos(lam),
            n * math.cos(phi) * math.sin(lam),
            n * (1 - WGS84_E2) * math.sin(phi),
        ]
    )


class LocalFrame:
    """East-north tangent plane at a reference point, in metres, on the WGS84 ellipsoid.

    Points are taken at zero height and the "up" component is dropped: over a few km that costs
    millimetres (the curvature drop is d²/2R, and it moves a point sideways by only ~d³/2R²).
    """

    def __init__(self, lat0: float, lon0: float) -> None:
        self.lat0, self.lon0 = lat0, lon0
        self._origin = _ecef(lat0, lon0)
        phi, lam = math.radians(lat0), math.radians(lon0)
        sp, cp, sl, cl = math.sin(phi), math.cos(phi), math.sin(lam), math.cos(lam)
        # Rows are the east, north and up unit vectors in ECEF.
        self._rot = np.array([[-sl, cl, 0.0], [-sp * cl, -sp * sl, cp], [cp * cl, cp * sl, sp]])

    def to_xy(self, lat: float, lon: float) -> tuple[float, float]:
        east, north, _up = self._rot @ (_ecef(lat, lon) - self._origin)
        return float(east), float(north)

    def to_latlon(self, x: float, y: float) -> tuple[float, float]:
        px, py, pz = self._origin + self._rot.T @ np.array([x, y, 0.0])
        p = math.hypot(px, py)
        # Fixed-point iteration on geodetic latitude; points near the surface converge to
        # sub-millimetre in a handful of steps. The height form avoids dividing by cos(lat) at the poles.
        phi = math.atan2(pz, p * (1 - WGS84_E2))
        for _ in range(5):
            n = WGS84_A / math.sqrt(1 - WGS84_E2 * math.sin(phi) ** 2)
            h = p * math.cos(phi) + pz * math.sin(phi) - WGS84_A**2 / n
            phi = math.atan2(pz, p * (1 - WGS84_E2 * n / (n + h)))
        return math.degrees(phi), math.degrees(math.atan2(py, px))


# --- TDOA multilateration ----------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    lat: float
    lon: float
    t: float  # arrival time, epoch seconds (devices report millisecond precision)
    gps_accuracy_m: float


@dataclass(frozen=True)
class LocationEstimate:
    lat: float
    lon: float
    radius_m: float  # about 95 % for "tdoa"; "the source is inside" bound for the fallbacks
    method: Method
    residual_m: float | None  # RMS range residual of the TDOA fit; None for fallbacks
    n_devices: int


MIN_RADIUS_M = 5.0  # below this GPS and building reflections dominate whatever the fit claims
# Smallest / largest spread of the device layout below which the layout counts as a line. Near a
# line a source and its mirror image give almost the same arrival times.
MIN_LAYOUT_ASPECT = 0.05
# A weighted residual larger than this (in sigmas) means timestamps that no source position can
# explain: a bad clock, an echo, or detections of two different shots.
MAX_RESIDUAL_SIGMA = 4.0
CHI2_95_2D = float(chi2.ppf(0.95, 2))
RING_STARTS = 8
# Polar grid for the uncertainty region: log-spaced rings keep ~3 % radial resolution at any scale.
REGION_RINGS, REGION_RAYS = 240, 120


def locate(
    observations: Sequence[Observation],
    *,
    speed_of_sound: float = SPEED_OF_SOUND_M_S,
    hearing_range_m: float = 1500.0,
    timing_sigma_s: float = 0.005,
) -> LocationEstimate:
    """Estimate where a shot came from, with an honest radius.

    - 1 device: the device itself, radius = GPS accuracy + hearing range.
    - 2 devices: the vertex of the TDOA hyperbola, i.e. the point on the line between them whose
      range difference matches the arrival-time difference (so it leans towards the earlier device).
      Any point both devices could hear is within the hearing range of it, hence the radius.
    - 3+ devices: weighted nonlinear least squares on (x, y, emission time) in a local metric frame,
      started from the centroid, every device and a ring around them. Each device's sigma combines
      the timing sigma with its GPS accuracy read as a 1-sigma range error (conservative for a 68 %
      horizontal radius). The radius covers the 95 % likelihood region (chi² within 5.99 of the
      best), including a second solution when the hyperbolae cross twice.
      If the fit is not trustworthy (collinear layout, no convergence, residual too large, source
      far outside the devices, or an uncertainty larger than the fallback's) the result is the
      centroid of the devices with radius hearing range + worst GPS accuracy: every point that all
      devices could hear lies within the hearing range of their centroid (the mean of the
      distances bounds the distance to the mean).
    """
    if not observations:
        raise ValueError("locate() needs at least one observation")
    obs = sorted(observations, key=lambda o: o.t)
    n = len(obs)
    fallback_radius = hearing_range_m + max(o.gps_accuracy_m for o in obs)
    if n == 1:
        return LocationEstimate(obs[0].lat, obs[0].lon, fallback_radius, "single", None, 1)

    frame = LocalFrame(*_mean_latlon(obs))
    pos = np.array([frame.to_xy(o.lat, o.lon) for o in obs])
    # Relative to the first arrival: epoch seconds would waste float precision.
    range_m = np.array([(o.t - obs[0].t) * speed_of_sound for o in obs])
    if n == 2:
        x, y = _two_device_point(pos, range_m[1])
        return LocationEstimate(*frame.to_latlon(x, y), fallback_radius, "centroid", None, 2)

    sigma_m = np.hypot(timing_sigma_s * speed_of_sound, [o.gps_accuracy_m for o in obs])
    result = _fit_tdoa(pos, range_m, sigma_m, hearing_range_m, fallback_radius)
    if result is None or result[1] >= fallback_radius:
        cx, cy = pos.mean(axis=0)
        return LocationEstimate(*frame.to_latlon(cx, cy), fallback_radius, "centroid", None, n)
    fit, radius = result
    x, y = fit.xy
    return LocationEstimate(*frame.to_latlon(x, y), radius, "tdoa", fit.residual_m, n)


def _mean_latlon(obs: Sequence[Observation]) -> tuple[float, float]:
    # Plain means are fine for a frame origin: devices that heard the same shot are a few km apart.
    # Longitudes are unwrapped around the first one so the antimeridian does not split the mean.
    lon0 = obs[0].lon
    dlon = [(o.lon - lon0 + 180.0) % 360.0 - 180.0 for o in obs]
    return float(np.mean([o.lat for o in obs])), lon0 + float(np.mean(dlon))


def _two_device_point(pos: np.ndarray, range_diff_m: float) -> tuple[float, float]:
    baseline = float(np.linalg.norm(pos[1] - pos[0]))
    if baseline == 0.0:
        return float(pos[0, 0]), float(pos[0, 1])
    # Range difference larger than the baseline is physically impossible (clock error): clip it,
    # which puts the point on the earlier device.
    along = (baseline - min(range_diff_m, baseline)) / 2
    x, y = pos[0] + (pos[1] - pos[0]) * along / baseline
    return float(x), float(y)


class _Fit(NamedTuple):
    xy: np.ndarray
    chi2: float
    residual_m: float


def _fit_tdoa(
    pos: np.ndarray, range_m: np.ndarray, sigma_m: np.ndarray, hearing_range_m: float, max_radius_m: float
) -> tuple[_Fit, float] | None:
    """Best TDOA fit in the local frame and its 95 % radius, or None when no fit is usable.

    Unknowns are (x, y, b) with b the emission time expressed as metres of travel before the first
    arrival; residual_i = (arrival range_i - b - distance_i) / sigma_i.
    """
    spread = np.linalg.svd(pos - pos.mean(axis=0), compute_uv=False)
    if spread[0] == 0.0 or spread[1] / spread[0] < MIN_LAYOUT_ASPECT:
        return None
    fits = (_solve(start, pos, range_m, sigma_m) for start in _starting_points(pos))
    plausible = [f for f in fits if f is not None and _distance_outside_hull(f.xy, pos) <= hearing_range_m]
    if not plausible:
        return None
    best = min(plausible, key=lambda f: f.chi2)
    # Sigmas are a priori; the region only grows when the residuals say they were optimistic.
    dof = len(pos) - 3
    threshold = best.chi2 + CHI2_95_2D * (max(1.0, best.chi2 / dof) if dof > 0 else 1.0)
    # With few devices the hyperbolae can cross twice: every solution that fits about as well as
    # the best is a lobe of the 95 % region, and the radius has to cover them all.
    lobes: list[np.ndarray] = []
    for fit in plausible:
        if fit.chi2 <= threshold and all(np.linalg.norm(fit.xy - lobe) > 1.0 for lobe in lobes):
            lobes.append(fit.xy)
    radius = max(_region_extent(best.xy, lobe, threshold, pos, range_m, sigma_m, max_radius_m) for lobe in lobes)
    return best, max(MIN_RADIUS_M, radius)


def _starting_points(pos: np.ndarray) -> list[np.ndarray]:
    # The centroid, every device (the earliest one included) and a ring around the layout: with
    # few devices the hyperbolae can cross twice, and a single start may settle in the wrong basin.
    centre = pos.mean(axis=0)
    ring = 1.5 * float(np.max(np.linalg.norm(pos - centre, axis=1)))
    angles = np.linspace(0.0, 2 * math.pi, RING_STARTS, endpoint=False)
    return [centre, *pos, *(centre + ring * np.column_stack([np.cos(angles), np.sin(angles)]))]


def _solve(start: np.ndarray, pos: np.ndarray, range_m: np.ndarray, sigma_m: np.ndarray) -> _Fit | None:
    def residuals(p: np.ndarray) -> np.ndarray:
        return (range_m - p[2] - np.hypot(*(p[:2] - pos).T)) / sigma_m

    def jacobian(p: np.ndarray) -> np.ndarray:
        delta = p[:2] - pos
        dist = np.maximum(np.hypot(*delta.T), 1e-6)
        return -np.column_stack([delta / dist[:, None], np.ones(len(pos))]) / sigma_m[:, None]

    b0 = float(np.median(range_m - np.hypot(*(start - pos).T)))
    res = least_squares(residuals, [*start, b0], jac=jacobian, method="lm")
    if res.status <= 0 or np.max(np.abs(res.fun)) > MAX_RESIDUAL_SIGMA:
        return None
    residual_m = float(np.sqrt(np.mean((res.fun * sigma_m) ** 2)))
    return _Fit(res.x[:2], float(res.fun @ res.fun), residual_m)


def _profile_chi2(points: np.ndarray, pos: np.ndarray, range_m: np.ndarray, sigma_m: np.ndarray) -> np.ndarray:
    """chi² at each (x, y) with the emission time at its best value (closed form: a weighted mean)."""
    offset = range_m - np.linalg.norm(points[:, None, :] - pos[None, :, :], axis=2)
    weights = sigma_m**-2
    b = offset @ weights / weights.sum()
    return (((offset - b[:, None]) / sigma_m) ** 2).sum(axis=1)


def _region_extent(
    centre: np.ndarray,
    lobe: np.ndarray,
    threshold: float,
    pos: np.ndarray,
    range_m: np.ndarray,
    sigma_m: np.ndarray,
    max_radius_m: float,
) -> float:
    """Distance from `centre` to the far edge of the region around `lobe` where chi² <= threshold.

    A linearised (Jacobian) covariance badly understates the uncertainty when the source is
    outside a small layout, where the region is a long curved banana, so the region itself is
    scanned on a polar grid around the lobe with log-spaced rings (fine near, coarse far).
    Returns inf when the region runs past `max_radius_m`.
    """
    radii = np.geomspace(0.5, max_radius_m, REGION_RINGS)
    angles = np.linspace(0.0, 2 * math.pi, REGION_RAYS, endpoint=False)
    ring = np.column_stack([np.cos(angles), np.sin(angles)])
    points = lobe + radii[:, None, None] * ring[None, :, :]
    inside = _profile_chi2(points.reshape(-1, 2), pos, range_m, sigma_m).reshape(len(radii), len(angles))
    inside = inside <= threshold
    if inside[-1].any():
        return math.inf
    # Pad each point by its grid cell so the coarse outer rings err towards a larger radius.
    cell = math.hypot(radii[1] / radii[0] - 1, 2 * math.pi / REGION_RAYS)
    reach = np.linalg.norm(points - centre, axis=2) + cell * radii[:, None]
    return float(reach[inside].max(initial=np.linalg.norm(lobe - centre)))


def _distance_outside_hull(point: np.ndarray, pos: np.ndarray) -> float:
    hull = ConvexHull(pos)
    # Facet equations are outward normals with offsets: all <= 0 means inside.
    if np.all(hull.equations[:, :2] @ point + hull.equations[:, 2] <= 0):
        return 0.0
    best = math.inf
    for i, j in hull.simplices:
        a, b = pos[i], pos[j]
        u = np.clip(np.dot(point - a, b - a) / np.dot(b - a, b - a), 0.0, 1.0)
        best = min(best, float(np.linalg.norm(point - (a + u * (b - a)))))
    return best


# --- Event grouping ----------------------------------------------------------------------------


def could_be_same_event(
    a: Observation,
    b: Observation,
    *,
    speed_of_sound: float = SPEED_OF_SOUND_M_S,
    hearing_range_m: float = 1500.0,
    slack_s: float = 1.0,
) -> bool:
    """Whether one shot could physically explain both detections.

    Sound cannot reach two devices further apart in time than their distance allows (plus slack for
    clock error), and both devices must be within hearing range of the same point. GPS accuracy is
    given to the detections in both tests, so a poor fix never splits one incident in two.
    """
    distance = haversine_m(a.lat, a.lon, b.lat, b.lon)
    gps = a.gps_accuracy_m + b.gps_accuracy_m
    if distance - gps > 2 * hearing_range_m:
        return False
    return abs(a.t - b.t) <= (distance + gps) / speed_of_sound + slack_s


# --- Shots and incidents: THE joining rule -------------------------------------------------------
#
# A detection joins an incident only when it can be the same shot as one of the incident's shots, or
# a follow-up shot at the incident's place. "The same shot" is decided on the whole group of
# arrivals at once (one source point and one emission time explain all of them within each
# detection's timing and GPS error), never pair by pair: two devices can each be pairwise compatible
# with a third and still have heard two different shots. Everything the incidents code needs (the
# join, the split of a wrongly absorbed shot, the shot groups that TDOA locates and that the shot
# count counts) comes from the functions below.

# A detection's timestamp may be off by this many of its sigmas (the TDOA solver's residual cut).
SAME_SHOT_SIGMAS = MAX_RESIDUAL_SIGMA
# How far a shooter may move between volleys and still be "the same place".
FOLLOW_UP_M = 150.0
# Grid refinement for the same-shot test: stop when a cell's half-diagonal is this share of the
# tightest tolerance (the test is then at most that much looser than exact), or at 0.5 m.
_REFINE_SHARE = 0.25
_MAX_CELLS = 50_000


@dataclass(frozen=True)
class Arrival:
    """One device's detection of a shot: where it was, when it heard it, how much to trust the time.

    ``obs`` is None when neither the clip nor the device had a position. ``timing_sigma_s`` is the
    clock's 1-sigma error (a millisecond or two for GPS, ten for NTP, the join slack for a free clock).
    """

    device: int | str
    obs: Observation | None
    timing_sigma_s: float
    at: float  # arrival time, epoch seconds (``obs.t`` when there is a position)

    def tolerance_m(self, speed_of_sound: float) -> float:
        gps = self.obs.gps_accuracy_m if self.obs is not None else 0.0
        return SAME_SHOT_SIGMAS * math.hypot(self.timing_sigma_s * speed_of_sound, gps)


@dataclass(frozen=True)
class Place:
    """Where an incident is on the map: its located point and uncertainty radius (from ``shots[0]``)."""

    lat: float
    lon: float
    radius_m: float


def shot_fits(
    arrivals: Sequence[Arrival],
    *,
    speed_of_sound: float = SPEED_OF_SOUND_M_S,
    hearing_range_m: float = 1500.0,
    same_place_as: Sequence[Arrival] = (),
    located: Place | None = None,
) -> bool:
    """Whether ONE shot (one source point, one emission time) explains every arrival.

    The source must be within hearing range (plus GPS accuracy) of every device, and each arrival
    must match distance / speed of sound after a common emission time to within its tolerance
    (``SAME_SHOT_SIGMAS`` sigmas of clock and GPS error). With ``same_place_as`` (an earlier shot's
    arrivals) the source must also be within ``FOLLOW_UP_M`` of a point that explains that shot,
    fired at its own time: a follow-up at the same place; ``located`` (that shot's fix and its 95 %
    radius) narrows where that was, when it agrees. Arrivals without a position never fit with
    others. Searched coarse-to-fine on a grid in a local metric frame, keeping every cell that could
    hold a solution, so the answer is never a false "no".
    """
    if any(a.obs is None for a in [*arrivals, *same_place_as]):
        return len(arrivals) == 1 and not same_place_as
    for group in (arrivals, same_place_as):
        # Cheap exits first: pairwise, sound cannot arrive further apart than the devices are.
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                a, b = group[i], group[j]
                slack = (a.tolerance_m(speed_of_sound) + b.tolerance_m(speed_of_sound)) / speed_of_sound
                if not could_be_same_event(
                    a.obs,  # type: ignore[arg-type]  # the group holds positioned arrivals only
                    b.obs,  # type: ignore[arg-type]
                    speed_of_sound=speed_of_sound,
                    hearing_range_m=hearing_range_m,
                    slack_s=slack,
                ):
                    return False
    obs = [a.obs for a in [*arrivals, *same_place_as] if a.obs is not None]
    if not arrivals or not obs:
        return False
    frame = LocalFrame(*_mean_latlon(obs))
    near: tuple[np.ndarray, float] | None = None
    if same_place_as:
        # Where the earlier shot may have come from, to a resolution well inside FOLLOW_UP_M.
        region = _Search(frame, same_place_as, speed_of_sound, hearing_range_m).region(FOLLOW_UP_M / 6)
        if region is None:
            return False
        points, room = region
        if located is not None:
            # Every arrival fitting within 4 sigmas is a wide net when the layout is poor (a long arc);
            # the fix's own 95 % region is the tighter, honest answer where the two agree.
            centre = np.array(frame.to_xy(located.lat, located.lon))
            inside = np.linalg.norm(points - centre, axis=1) <= located.radius_m + room
            if inside.any():
                points = points[inside]
        near = (points, room)
    return _Search(frame, arrivals, speed_of_sound, hearing_range_m).fits(near)


class _Search:
    """Coarse-to-fine grid search for source points that explain a group of arrivals.

    A cell survives while some point inside it could still be a solution: each distance changes by at
    most the cell's half-diagonal within it, so cells are judged with that much extra room and only
    dropped when no point inside can fit. A cell centre that fits exactly is a witness.
    """

    def __init__(self, frame: LocalFrame, arrivals: Sequence[Arrival], speed: float, hearing_range_m: float) -> None:
        obs = [a.obs for a in arrivals if a.obs is not None]
        self.pos = np.array([frame.to_xy(o.lat, o.lon) for o in obs])
        self.reach = np.array([hearing_range_m + o.gps_accuracy_m for o in obs])
        t0 = min(o.t for o in obs)
        self.range_m = np.array([(o.t - t0) * speed for o in obs])
        self.tol = np.array([a.tolerance_m(speed) for a in arrivals])

    def _start(self) -> tuple[np.ndarray, float] | None:
        lo = (self.pos - self.reach[:, None]).max(axis=0)
        hi = (self.pos + self.reach[:, None]).min(axis=0)
        if np.any(lo > hi):
            return None
        half = float(max(hi - lo)) / 2 / 16 + 1e-6
        xs = np.arange(lo[0] + half, hi[0] + half, 2 * half)
        ys = np.arange(lo[1] + half, hi[1] + half, 2 * half)
        return np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2), half

    def _judge(self, cells: np.ndarray, half: float, extra: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(witness, possible) per cell; ``extra`` is each cell's distance beyond an outside constraint."""
        room = half * math.sqrt(2)
        dist = np.linalg.norm(cells[:, None, :] - self.pos[None, :, :], axis=2)
        offset = self.range_m[None, :] - dist  # the emission time (as metres) each arrival implies
        spread = (offset - self.tol).max(axis=1) - (offset + self.tol).min(axis=1)
        hearing = (dist - self.reach[None, :]).max(axis=1)
        outside = np.zeros(len(cells)) if extra is None else extra
        witness = (spread <= 0) & (hearing <= 0) & (outside <= 0)
        return witness, (spread <= 2 * room) & (hearing <= room) & (outside <= room)

    @staticmethod
    def _split(cells: np.ndarray, half: float) -> np.ndarray:
        return np.concatenate([cells + half * np.array(d) for d in ((-1, -1), (-1, 1), (1, -1), (1, 1))])

    def fits(self, near: tuple[np.ndarray, float] | None = None) -> bool:
        """Whether a solution exists (within FOLLOW_UP_M of a ``near`` region point, when given)."""
        start = self._start()
        if start is None:
            return False
        cells, half = start
        floor = max(0.5, _REFINE_SHARE * float(self.tol.min()))
        tree = cKDTree(near[0]) if near is not None else None
        while True:
            extra = None
            if tree is not None and near is not None:
                extra = tree.query(cells)[0] - near[1] - FOLLOW_UP_M
            witness, possible = self._judge(cells, half, extra)
            if witness.any():
                return True
            if not possible.any():
                return False
            if half * math.sqrt(2) <= floor or possible.sum() * 4 > _MAX_CELLS:
                # Every remaining cell is within `floor` of fitting: as good as a fit at this precision.
                return True
            half /= 2
            cells = self._split(cells[possible], half)

    def region(self, resolution_m: float) -> tuple[np.ndarray, float] | None:
        """Centres of cells that may hold a solution, refined to ``resolution_m``, and their half-diagonal."""
        start = self._start()
        if start is None:
            return None
        cells, half = start
        while True:
            _, possible = self._judge(cells, half, None)
            if not possible.any():
                return None
            if half * math.sqrt(2) <= resolution_m or possible.sum() * 4 > _MAX_CELLS:
                return cells[possible], half * math.sqrt(2)
            half /= 2
            cells = self._split(cells[possible], half)


def align_shots(
    arrivals: Sequence[Arrival],
    *,
    speed_of_sound: float = SPEED_OF_SOUND_M_S,
    hearing_range_m: float = 1500.0,
) -> list[list[int]]:
    """Group arrivals into shots: indices into ``arrivals``, each group one shot, earliest shot first.

    In time order, each arrival joins the earliest shot it fits (a device hears a shot once), else
    starts a new one. Only shots begun within the longest possible skew are tried, so a long night
    of follow-ups stays linear.
    """
    order = sorted(range(len(arrivals)), key=lambda i: arrivals[i].at)
    # No shot takes an arrival later than the longest skew of any arrival after its first one, and
    # shots are begun in time order: those begun longer ago are passed for good, so each arrival
    # tries only the shots still open (the recording of a long night's follow-ups reads them all).
    longest = _max_skew_s(arrivals, speed_of_sound, hearing_range_m) if arrivals else 0.0
    groups: list[list[int]] = []
    open_from = 0
    for i in order:
        arrival = arrivals[i]
        while open_from < len(groups) and arrival.at - arrivals[groups[open_from][0]].at > longest:
            open_from += 1
        for group in groups[open_from:]:
            members = [arrivals[j] for j in group]
            if arrival.at - members[0].at > _max_skew_s([*members, arrival], speed_of_sound, hearing_range_m):
                continue
            if all(m.device != arrival.device for m in members) and shot_fits(
                [*members, arrival], speed_of_sound=speed_of_sound, hearing_range_m=hearing_range_m
            ):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def _max_skew_s(arrivals: Sequence[Arrival], speed_of_sound: float, hearing_range_m: float) -> float:
    return 2 * hearing_range_m / speed_of_sound + SAME_SHOT_SIGMAS * 2 * max(a.timing_sigma_s for a in arrivals) + 1.0


@dataclass(frozen=True)
class OpenIncident:
    """What the rule needs to know about an open incident: its place and its shots (aligned arrivals)."""

    key: int
    place: Place | None
    shots: Sequence[Sequence[Arrival]]  # aligned (align_shots); shots[0] is the one its place comes from


@dataclass(frozen=True)
class Verdict:
    """``join``: add to ``incident`` (as shot ``shot``, or a new follow-up shot when None);
    ``split``: shot ``shot`` of ``incident`` is this one, heard elsewhere: move it to a new incident
    with this arrival; ``open``: a new incident."""

    action: Literal["join", "split", "open"]
    incident: int | None = None
    shot: int | None = None


def _at_place(
    arrivals: Sequence[Arrival], incident: OpenIncident, *, speed_of_sound: float, hearing_range_m: float
) -> bool:
    """Could these arrivals be a follow-up shot at the incident's place?

    Physics: one source within ``FOLLOW_UP_M`` of a point that explains the incident's first shot.
    Policy on top: every device must be in earshot (plus that move) of the incident's located
    point, so two shootings kilometres apart in the same minute are never one incident just because
    a one-device fix has a circle as wide as the hearing range.
    """
    place = incident.place
    if place is None or not incident.shots or any(a.obs is None for a in arrivals):
        return False
    for a in arrivals:
        assert a.obs is not None
        distance = haversine_m(a.obs.lat, a.obs.lon, place.lat, place.lon)
        if distance - a.obs.gps_accuracy_m > hearing_range_m + FOLLOW_UP_M:
            return False
    founding = [a for a in incident.shots[0] if a.obs is not None]
    return shot_fits(
        arrivals, speed_of_sound=speed_of_sound, hearing_range_m=hearing_range_m, same_place_as=founding, located=place
    )


def place_arrival(
    arrival: Arrival,
    incidents: Sequence[OpenIncident],
    *,
    speed_of_sound: float = SPEED_OF_SOUND_M_S,
    hearing_range_m: float = 1500.0,
) -> Verdict:
    """THE joining rule: which open incident (if any) a new detection belongs to.

    1. The same shot as one of an incident's shots: one source explains that shot's arrivals and
       this one. The incident's ``shots[0]`` (its best-heard shot) defines its place; every other
       (follow-up) shot must also come from there, so when this arrival proves a follow-up shot was
       fired elsewhere, that shot is split off into an incident of its own (verdict ``split``).
    2. Else a follow-up shot at an incident's place: this device is in earshot of it and a source
       there could be heard by it (the nearest such place wins). A device without a position can only
       follow up an incident it is already part of.
    3. Else a new incident.
    The quiet window (how long an incident stays joinable) is the caller's: it selects ``incidents``.
    """
    kw = {"speed_of_sound": speed_of_sound, "hearing_range_m": hearing_range_m}
    for incident in incidents:
        for index, shot in enumerate(incident.shots):
            if any(a.device == arrival.device for a in shot):
                continue
            candidate = [*shot, arrival]
            if not shot_fits(candidate, speed_of_sound=speed_of_sound, hearing_range_m=hearing_range_m):
                continue
            if index == 0 or _at_place(candidate, incident, **kw):
                return Verdict("join", incident.key, index)
            return Verdict("split", incident.key, index)
    best: tuple[float, int] | None = None
    for incident in incidents:
        if arrival.obs is None:
            if any(a.device == arrival.device for shot in incident.shots for a in shot):
                return Verdict("join", incident.key, None)
            continue
        if incident.place is not None and _at_place([arrival], incident, **kw):
            distance = haversine_m(arrival.obs.lat, arrival.obs.lon, incident.place.lat, incident.place.lon)
            if best is None or distance < best[0]:
                best = (distance, incident.key)
    if best is not None:
        return Verdict("join", best[1], None)
    return Verdict("open")


# --- GeoJSON polygons (police jurisdictions) ---------------------------------------------------


def _rings(geometry: dict[str, Any]) -> list[list[list[list[float]]]]:
    """Polygons of a GeoJSON object as lists of rings ([lon, lat] points), holes after the shell."""
    kind = geometry.get("type")
    if kind == "Feature":
        return _rings(geometry.get("geometry") or {})
    if kind == "FeatureCollection":
        return [poly for feature in geometry.get("features", []) for poly in _rings(feature)]
    if kind == "GeometryCollection":
        return [poly for part in geometry.get("geometries", []) for poly in _rings(part)]
    if kind == "Polygon":
        return [geometry["coordinates"]]
    if kind == "MultiPolygon":
        return list(geometry["coordinates"])
    return []


def _in_ring(lat: float, lon: float, ring: Sequence[Sequence[float]]) -> bool:
    # Ray casting eastwards from the point; GeoJSON orders coordinates [lon, lat].
    inside = False
    n = len(ring)
    for i in range(n):
        x1, y1 = ring[i][0], ring[i][1]
        x2, y2 = ring[(i + 1) % n][0], ring[(i + 1) % n][1]
        if (y1 > lat) != (y2 > lat):
            x_cross = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lon < x_cross:
                inside = not inside
    return inside


def point_in_geojson(lat: float, lon: float, geometry: dict[str, Any]) -> bool:
    """Whether (lat, lon) lies in a GeoJSON Polygon/MultiPolygon (holes respected)."""
    for polygon in _rings(geometry):
        if polygon and _in_ring(lat, lon, polygon[0]) and not any(_in_ring(lat, lon, h) for h in polygon[1:]):
            return True
    return False


def validate_jurisdiction_geojson(geometry: Any) -> None:
    """Raise ValueError unless the object holds at least one usable polygon."""
    if not isinstance(geometry, dict):
        raise ValueError("jurisdiction must be a GeoJSON object")
    try:
        polygons = _rings(geometry)
        for polygon in polygons:
            for ring in polygon:
                if len(ring) < 4 or any(len(point) < 2 for point in ring):
                    raise ValueError("every polygon ring needs at least 4 [lon, lat] points")
                for lon, lat, *_ in ring:
                    float(lon), float(lat)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed GeoJSON polygon: {exc}") from exc
    if not polygons:
        raise ValueError("jurisdiction must be a Polygon or MultiPolygon")
