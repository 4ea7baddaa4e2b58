"""The site's pure parts: JWK sealing, amount formatting, chart geometry."""

from __future__ import annotations

import datetime as dt

import pytest

from web import charts, crypto
from web.formatting import format_amount

SECRET = "s" * 40
JWK = {"kty": "RSA", "n": "abc", "d": "secret-exponent"}


def test_a_sealed_jwk_opens_with_its_secret_or_a_fallback_only() -> None:
    token = crypto.seal_jwk(JWK, secrets=[SECRET])
    assert "secret-exponent" not in token
    assert crypto.open_jwk(token, secrets=[SECRET]) == JWK
    assert crypto.open_jwk(token, secrets=["n" * 40, SECRET]) == JWK  # SECRET moved to the fallbacks
    with pytest.raises(crypto.SealError):
        crypto.open_jwk(token, secrets=["n" * 40])
    rotated = crypto.rotate(token, secrets=["n" * 40, SECRET])
    assert crypto.open_jwk(rotated, secrets=["n" * 40]) == JWK


def test_the_derived_key_depends_on_the_secret() -> None:
    assert crypto.fernet_key(SECRET) == crypto.fernet_key(SECRET) != crypto.fernet_key(SECRET + "x")


@pytest.mark.parametrize(("units", "text"), [
    (25_000_000_000, "0.025"), (10**12, "1"), (1234 * 10**12 + 5 * 10**11, "1,234.5"), (0, "0"), (1, "0.000000000001"),
    (None, "—"),
])
def test_amounts_are_shown_as_decimals(units: int | None, text: str) -> None:
    assert format_amount(units) == text


def test_the_chart_steps_up_with_each_grant() -> None:
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    series = [(start, 10), (start + dt.timedelta(hours=1), 30)]
    chart = charts.supply_chart(series)
    assert chart.total == 40 and chart.largest == 30 and len(chart.bars) == 2
    points = [tuple(map(float, p.split(","))) for p in chart.line.split()]
    assert points[0] == (chart.plot_left, chart.plot_bottom)
    assert points[-1] == (chart.plot_right, chart.plot_top)  # the running total reaches the top
    ys = [y for _, y in points]
    assert ys == sorted(ys, reverse=True)  # never goes down
    assert chart.bars[1].height == chart.plot_bottom - chart.plot_top  # the largest grant is full height
    assert charts.supply_chart([]).empty


def test_one_grant_is_a_step_inside_the_chart_between_two_different_times() -> None:
    at = dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)
    chart = charts.supply_chart([(at, 5)])
    assert chart.start < at < chart.end and chart.start.strftime("%H:%M") != chart.end.strftime("%H:%M")
    points = [tuple(map(float, p.split(","))) for p in chart.line.split()]
    (x0, y0), (x_step, y_low), (_, y_high), (x_end, _) = points
    assert chart.plot_left == x0 < x_step < x_end == chart.plot_right  # the step is inside, not at the edge
    assert y0 == y_low == chart.plot_bottom and y_high == chart.plot_top
    assert chart.plot_left < chart.bars[0].x < chart.plot_right
