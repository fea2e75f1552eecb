"""Value shapes (flamingo.shape): literal data, a fixed time window, no clock."""

from __future__ import annotations

from typing import Any

import pytest

from flamingo.shape import TimeWindows, shape

NOW = 1_795_880_000.0  # 2026-11-28T...Z: the "run" these values were made in
WINDOW = TimeWindows(((NOW, NOW + 60),))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (NOW + 1, "epoch-s"),
        (int(NOW) + 5, "epoch-s"),
        (NOW + 0.123, "epoch-s"),
        (str(int(NOW)), "epoch-s"),
        (int(NOW * 1000) + 17, "epoch-ms"),
        (str(int(NOW * 1000)), "epoch-ms"),
        (int(NOW * 1_000_000), "epoch-us"),
        (NOW - 86_400, None),  # yesterday: not now (without the recording's window)
        (0, None),
        (42, None),
        (1.5, None),
        (True, None),
        (float("nan"), None),
        ("Sat, 28 Nov 2026 15:33:30 GMT", "http-date"),
        ("Sunday, 29-Nov-26 15:33:30 GMT", None),  # RFC 850, a day later: outside
        ("Wed, 01 Jan 2025 00:00:00 GMT", None),  # Last-Modified of the demo: a constant
        ("2026-11-28T15:33:30Z", "iso-date"),
        ("2026-11-28T15:33:30.123456+00:00", "iso-date"),
        ("2026-11-28 15:33:30", "iso-date"),  # no offset: UTC
        ("2026-11-28T16:33:30+01:00", "iso-date"),
        ("2026-11-28", None),
        ("3f2504e0-4f89-11d3-9a0c-0305e82c3301", "uuid"),
        ("9b2d6c1e0f3a4b5c9b2d6c1e0f3a4b5c", "hex"),
        ("5f3c9e1a", "hex"),
        ("deadbeef", None),  # hex letters only: a word
        ("12345678", None),  # digits only, not a time: a number
        ("dGhpcyBpcyBhIHRva2VuIDEyMw==", "base64"),
        ("aGVsbG8gd29ybGQgMTIzNDU2Nzg5MA", "base64"),
        ("hello world", None),
        ("pink", None),
        (None, "null"),
        ("", "empty"),
        ([1, 2], None),
    ],
)
def test_shapes(value: Any, expected: str | None) -> None:
    assert shape(value, WINDOW) == expected


def test_a_recording_window_makes_its_own_time_a_timestamp() -> None:
    yesterday = NOW - 86_400
    assert shape(yesterday, WINDOW) is None
    assert shape(yesterday, WINDOW.plus(yesterday - 5, yesterday + 5)) == "epoch-s"


def test_no_window_no_timestamps() -> None:
    assert shape(NOW, TimeWindows()) is None
    assert shape("Sat, 28 Nov 2026 15:33:30 GMT", TimeWindows()) is None
    assert shape("3f2504e0-4f89-11d3-9a0c-0305e82c3301", TimeWindows()) == "uuid"
