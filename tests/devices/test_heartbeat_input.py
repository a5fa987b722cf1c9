"""The heartbeat's plain input path agrees with HeartbeatInputSerializer wherever it answers (issue 14)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.api.serializers import HeartbeatInputSerializer, heartbeat_input

# Every declared field, and one the serializer ignores.
FIELDS = [*HeartbeatInputSerializer().fields, "not_a_field"]

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.integers(min_value=-300, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-250, max_value=250),
    st.text(max_size=80),
    st.sampled_from(["ntp", "gps", "system", "NTP", " ntp", "1.4.2", "", " x ", "a\x00b", "7", "true"]),
    st.lists(st.integers(), max_size=2),
)
bodies = st.dictionaries(st.sampled_from(FIELDS), values)


def typed(data: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    return {name: (type(value), value) for name, value in data.items()}


@settings(max_examples=600, deadline=None)
@given(bodies)
def test_wherever_the_plain_path_answers_it_equals_the_serializer(body: dict[str, Any]) -> None:
    plain = heartbeat_input(body)
    serializer = HeartbeatInputSerializer(data=body)
    if plain is not None:
        assert serializer.is_valid(), serializer.errors
        assert typed(plain) == typed(dict(serializer.validated_data))


AGENT_BODIES = [
    {
        "uptime_s": 3600,
        "battery_pct": 87,
        "mic_level_dbfs": -42.5,
        "clipping": False,
        "free_storage_mb": 900,
        "queue_length": 0,
        "dropped_clips": 0,
        "clock_source": "ntp",
        "firmware_version": "1.4.2",
    },
    {"latitude": 52.52, "longitude": 13.405, "accuracy_m": 4.2, "rejected_clips": 1, "set_aside_clips": 0},
    {"latitude": None, "longitude": None, "battery_pct": None, "model_version": "7", "firmware_version": ""},
    {},
]


def test_what_devices_send_takes_the_plain_path_and_validates_the_same() -> None:
    for body in AGENT_BODIES:
        plain = heartbeat_input(body)
        assert plain is not None, body
        serializer = HeartbeatInputSerializer(data=body)
        assert serializer.is_valid()
        assert typed(plain) == typed(dict(serializer.validated_data))


def test_anything_doubtful_is_left_to_the_serializer() -> None:
    for body in [
        [],
        "uptime_s=1",
        {"latitude": 52.5},  # one coordinate without the other
        {"battery_pct": 101},
        {"battery_pct": "87"},  # a number as text: the serializer decides
        {"clipping": "true"},
        {"queue_length": -1},
        {"queue_length": 1.5},
        {"uptime_s": float("nan")},
        {"firmware_version": " 1.4.2"},
        {"firmware_version": "x" * 65},
        {"clock_source": "sundial"},
        {"mic_level_dbfs": True},
    ]:
        assert heartbeat_input(body) is None, body
