from __future__ import annotations

import pytest
from django.utils import timezone

from alerts.models import Notification
from alerts.selectors import stations_covering, stations_for_point, stations_nearest
from alerts.services import incident_record_detection
from tests.alerts.helpers import classify
from tests.factories import DeviceFactory, PoliceStationFactory

# A 0.1° square around (52.5, 13.4) with a 0.02° hole in the middle.
SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [[13.35, 52.45], [13.45, 52.45], [13.45, 52.55], [13.35, 52.55], [13.35, 52.45]],
        [[13.39, 52.49], [13.41, 52.49], [13.41, 52.51], [13.39, 52.51], [13.39, 52.49]],
    ],
}


def test_radius_and_polygon_jurisdictions_cover_the_point(db) -> None:
    radius = PoliceStationFactory(name="Radius", latitude=52.52, longitude=13.405, jurisdiction_radius_km=5)
    polygon = PoliceStationFactory(
        name="Polygon", latitude=52.0, longitude=13.0, jurisdiction_radius_km=None, jurisdiction_geojson=SQUARE
    )
    PoliceStationFactory(name="Inactive", latitude=52.52, longitude=13.405, jurisdiction_radius_km=50, is_active=False)
    PoliceStationFactory(name="Small", latitude=52.40, longitude=13.405, jurisdiction_radius_km=1)
    assert {s.name for s in stations_covering(52.53, 13.40)} == {"Radius", "Polygon"}
    assert stations_covering(52.46, 13.36) == [polygon]
    assert [s.pk for s in stations_covering(52.535, 13.46)] == [radius.pk]


def test_nearest_stations_by_great_circle_when_no_jurisdiction_covers(db, settings) -> None:
    settings.ALERT_NEAREST_STATIONS = 2
    for name, lat, lon in [("A", 52.60, 13.40), ("B", 52.40, 13.40), ("C", 53.50, 13.40), ("Far", -33.9, 151.2)]:
        PoliceStationFactory(name=name, latitude=lat, longitude=lon, jurisdiction_radius_km=None)
    # (52.55, 13.40): A is 5.6 km away, B 16.7 km, C 105 km.
    assert [s.name for s in stations_for_point(52.55, 13.40)] == ["A", "B"]
    # Nothing within the widest ring: the whole table is ranked.
    assert [s.name for s in stations_nearest(-30.0, 150.0, 1)] == ["Far"]
    assert stations_nearest(52.55, 13.40, 0) == []


def test_nearest_works_across_the_antimeridian(db) -> None:
    PoliceStationFactory(name="East", latitude=0.0, longitude=179.95, jurisdiction_radius_km=None)
    PoliceStationFactory(name="West", latitude=0.0, longitude=-179.9, jurisdiction_radius_km=None)
    PoliceStationFactory(name="Middle", latitude=0.0, longitude=0.0, jurisdiction_radius_km=None)
    assert [s.name for s in stations_nearest(0.0, -179.99, 2)] == ["East", "West"]


def test_incident_is_routed_and_stations_are_notified(owner, settings) -> None:
    settings.ALERT_NEAREST_STATIONS = 1
    covering = PoliceStationFactory(
        name="Mitte",
        latitude=52.52,
        longitude=13.405,
        jurisdiction_radius_km=5,
        webhook_url="https://cad.example.org/hook",
        webhook_secret="s3cret",
    )
    PoliceStationFactory(name="Elsewhere", latitude=48.1, longitude=11.5, jurisdiction_radius_km=5)
    device = DeviceFactory(owner=owner, latitude=52.521, longitude=13.41)
    incident = incident_record_detection(classification=classify(device, recorded_at=timezone.now()))
    assert list(incident.stations.all()) == [covering]
    station_rows = Notification.objects.filter(recipient_kind="station")
    assert {(n.channel, n.target) for n in station_rows} == {
        ("webhook", "https://cad.example.org/hook"),
        ("email", covering.contact_email),
    }
    assert all(n.station_id == covering.pk for n in station_rows)


@pytest.mark.parametrize("lat", [52.9, 52.1])
def test_uncovered_incident_goes_to_the_nearest_station(owner, settings, lat) -> None:
    settings.ALERT_NEAREST_STATIONS = 1
    north = PoliceStationFactory(name="North", latitude=53.0, longitude=13.4, jurisdiction_radius_km=1)
    south = PoliceStationFactory(name="South", latitude=52.0, longitude=13.4, jurisdiction_radius_km=1)
    device = DeviceFactory(owner=owner, latitude=lat, longitude=13.4)
    incident = incident_record_detection(classification=classify(device))
    assert list(incident.stations.all()) == [north if lat > 52.5 else south]
