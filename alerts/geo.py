"""Temporary shim, removed after the restructure merge: moved to core.geo."""

from core.geo import *  # noqa: F403
from core.geo import (  # noqa: F401
    _distance_outside_hull,
    _ecef,
    _Fit,
    _fit_tdoa,
    _in_ring,
    _mean_latlon,
    _profile_chi2,
    _region_extent,
    _rings,
    _solve,
    _starting_points,
    _two_device_point,
)
