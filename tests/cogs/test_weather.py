"""Tests for /weather against mocked Open-Meteo geocoding and forecast."""

from __future__ import annotations

import httpx
import pytest
import respx

from cogs.weather import WeatherCog, WeatherSettings
from tests.cogs.conftest import FakeInteraction

GEO = "https://geo.test/v1/search"
FORECAST = "https://forecast.test/v1/forecast"
PLACE = {"results": [{"name": "Berlin", "latitude": 52.52437, "longitude": 13.41053, "country": "Germany"}]}
CURRENT = {
    "current_units": {"temperature_2m": "°C"},
    "current": {
        "temperature_2m": 21.5,
        "relative_humidity_2m": 40,
        "wind_speed_10m": 11.2,
        "weather_code": 3,
    },
}


def cog() -> WeatherCog:
    return WeatherCog(WeatherSettings(GEO, FORECAST))


async def test_weather_chained_calls_and_units(interaction: FakeInteraction) -> None:
    c = cog()
    with respx.mock(using="httpx") as mock:
        geo = mock.get(GEO).respond(json=PLACE)
        forecast = mock.get(FORECAST).respond(json=CURRENT)
        await c.weather.callback(c, interaction, "Berlin")  # type: ignore[arg-type]
    assert geo.calls.last.request.url.params["name"] == "Berlin"
    assert forecast.calls.last.request.url.params["latitude"] == "52.52437"
    embed = interaction.reply.embed
    assert (
        embed is not None and embed.title == "Weather in Berlin, Germany" and embed.description == "Overcast"
    )
    fields = {f.name: f.value for f in embed.fields}
    assert fields == {"Temperature": "21.5 °C (71 °F)", "Humidity": "40%", "Wind": "11 km/h"}


@pytest.mark.parametrize(
    ("geo", "forecast", "expected"),
    [
        (httpx.Response(200, json={"generationtime_ms": 0.5}), None, "No place found named `Atlantis`."),
        (httpx.Response(429, headers={"Retry-After": "60"}), None, "try again in 1 minute"),
        (httpx.Response(200, json=PLACE), httpx.Response(200, json={"current": {}}), "could not understand"),
        (httpx.Response(200, json=PLACE), httpx.Response(200, text="]"), "could not understand"),
        (httpx.Response(200, json={"results": [{"name": "x"}]}), None, "could not understand"),
    ],
)
async def test_weather_failures(
    interaction: FakeInteraction, geo: httpx.Response, forecast: httpx.Response | None, expected: str
) -> None:
    c = cog()
    with respx.mock(using="httpx") as mock:
        mock.get(GEO).mock(return_value=geo)
        if forecast is not None:
            mock.get(FORECAST).mock(return_value=forecast)
        await c.weather.callback(c, interaction, "Atlantis")  # type: ignore[arg-type]
    assert expected in (interaction.reply.content or "") and interaction.reply.ephemeral


async def test_weather_timeout(interaction: FakeInteraction) -> None:
    c = cog()
    with respx.mock(using="httpx") as mock:
        mock.get(GEO).mock(side_effect=httpx.ReadTimeout("slow"))
        await c.weather.callback(c, interaction, "Berlin")  # type: ignore[arg-type]
    assert "took too long" in (interaction.reply.content or "")


@pytest.mark.parametrize("junk", ["", "a\x00", "x" * 101])
async def test_weather_junk_rejected_without_http(interaction: FakeInteraction, junk: str) -> None:
    c = cog()
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.route()
        await c.weather.callback(c, interaction, junk)  # type: ignore[arg-type]
    assert not route.called


@pytest.mark.parametrize(
    "body", ['{"current": {"temperature_2m": NaN}}', '{"current": {"temperature_2m": 1e999}}']
)
async def test_weather_non_finite_temperature_is_not_shown(interaction: FakeInteraction, body: str) -> None:
    with respx.mock(using="httpx") as mock:
        mock.get(GEO).respond(json=PLACE)
        mock.get(FORECAST).respond(content=body, headers={"content-type": "application/json"})
        await cog().weather.callback(cog(), interaction, "Berlin")  # type: ignore[arg-type]
    assert interaction.reply.content == "Open-Meteo sent an answer we could not understand."


async def test_weather_odd_code_and_humidity_are_left_out(interaction: FakeInteraction) -> None:
    body = '{"current": {"temperature_2m": 20, "relative_humidity_2m": NaN, "weather_code": Infinity}}'
    with respx.mock(using="httpx") as mock:
        mock.get(GEO).respond(json=PLACE)
        mock.get(FORECAST).respond(content=body, headers={"content-type": "application/json"})
        await cog().weather.callback(cog(), interaction, "Berlin")  # type: ignore[arg-type]
    embed = interaction.reply.embed
    assert embed is not None and [f.name for f in embed.fields] == ["Temperature"]
    assert "nan" not in str(embed.to_dict()).lower()
