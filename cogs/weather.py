"""/weather: Open-Meteo geocoding, then the current forecast for the place found."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import discord
from discord import app_commands
from discord.ext import commands

from cogs._embeds import make_embed
from cogs._replies import NothingFoundError, answer, as_dict, inline_code, on_cooldown, reject, text
from cogs._validation import InputError, clean, env_url
from services.errors import BadResponseError
from services.http_client import http_client

DEFAULT_GEOCODING_URL = "https://geocoding-api.open-meteo.com/v1/search"
DEFAULT_FORECAST_URL = "https://api.open-meteo.com/v1/forecast"

# WMO weather interpretation codes, as documented by Open-Meteo.
WEATHER_CODES = {
    0: "Clear sky", 1: "Mainly clear", 2: "Partly cloudy", 3: "Overcast", 45: "Fog",
    48: "Depositing rime fog", 51: "Light drizzle", 53: "Drizzle", 55: "Dense drizzle",
    56: "Light freezing drizzle", 57: "Freezing drizzle", 61: "Light rain", 63: "Rain",
    65: "Heavy rain", 66: "Light freezing rain", 67: "Freezing rain", 71: "Light snow",
    73: "Snow", 75: "Heavy snow", 77: "Snow grains", 80: "Light showers", 81: "Showers",
    82: "Violent showers", 85: "Snow showers", 86: "Heavy snow showers", 95: "Thunderstorm",
    96: "Thunderstorm with hail", 99: "Thunderstorm with heavy hail",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class WeatherSettings:
    """Where the two Open-Meteo endpoints live."""

    geocoding_url: str = DEFAULT_GEOCODING_URL
    forecast_url: str = DEFAULT_FORECAST_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WeatherSettings:
        """Read OPEN_METEO_GEOCODING_URL and OPEN_METEO_FORECAST_URL."""
        env = os.environ if env is None else env
        return cls(
            env_url(env, "OPEN_METEO_GEOCODING_URL", DEFAULT_GEOCODING_URL),
            env_url(env, "OPEN_METEO_FORECAST_URL", DEFAULT_FORECAST_URL),
        )


@dataclass(frozen=True, slots=True)
class Place:
    """A geocoded place."""

    name: str
    country: str | None
    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class Weather:
    """Current conditions at a place."""

    place: Place
    temperature_c: float
    humidity: float | None
    wind_kmh: float | None
    code: int | None


def _float(data: Mapping[str, object], key: str) -> float | None:
    """A finite number field, or None (JSON parsing accepts NaN and Infinity, and `int(inf)` raises)."""
    value = data.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a float's range
        return None
    return number if math.isfinite(number) else None


async def fetch_place(settings: WeatherSettings, query: str) -> Place:
    """Geocode `query` to the best-matching place."""
    params = {"name": query, "count": "1", "language": "en", "format": "json"}
    data = as_dict(await http_client.get_json(settings.geocoding_url, params=params), "Open-Meteo")
    results = data.get("results")
    if not results:  # Open-Meteo omits `results` when nothing matched
        raise NothingFoundError(f"no place matches {query!r}")
    first = results[0] if isinstance(results, list) and isinstance(results[0], dict) else None
    if first is None:
        raise BadResponseError("Open-Meteo geocoding results are not a list of places")
    name, lat, lon = text(first, "name"), _float(first, "latitude"), _float(first, "longitude")
    if name is None or lat is None or lon is None:
        raise BadResponseError("Open-Meteo place has no name/latitude/longitude")
    return Place(name=name, country=text(first, "country"), latitude=lat, longitude=lon)


async def fetch_weather(settings: WeatherSettings, query: str) -> Weather:
    """Geocode `query`, then fetch the current conditions there."""
    place = await fetch_place(settings, query)
    params = {
        "latitude": str(place.latitude),
        "longitude": str(place.longitude),
        "current": "temperature_2m,relative_humidity_2m,wind_speed_10m,weather_code",
        "wind_speed_unit": "kmh",
    }
    data = as_dict(await http_client.get_json(settings.forecast_url, params=params), "Open-Meteo")
    current = data.get("current")
    if not isinstance(current, dict) or (temperature := _float(current, "temperature_2m")) is None:
        raise BadResponseError("Open-Meteo forecast has no current.temperature_2m")
    code = _float(current, "weather_code")
    return Weather(
        place=place,
        temperature_c=temperature,
        humidity=_float(current, "relative_humidity_2m"),
        wind_kmh=_float(current, "wind_speed_10m"),
        code=None if code is None else int(code),
    )


def build_weather_embed(weather: Weather) -> discord.Embed:
    """Shape Weather into an embed with natural units."""
    place = weather.place
    fahrenheit = weather.temperature_c * 9 / 5 + 32
    fields = [("Temperature", f"{weather.temperature_c:.1f} °C ({fahrenheit:.0f} °F)")]
    if weather.humidity is not None:
        fields.append(("Humidity", f"{weather.humidity:.0f}%"))
    if weather.wind_kmh is not None:
        fields.append(("Wind", f"{weather.wind_kmh:.0f} km/h"))
    where = f"{place.name}, {place.country}" if place.country else place.name
    return make_embed(
        title=f"Weather in {where}",
        description=WEATHER_CODES.get(weather.code, "Unknown conditions") if weather.code is not None else "",
        fields=fields,
        footer="Open-Meteo",
    )


class WeatherCog(commands.Cog, name="Weather"):
    """Current weather anywhere."""

    def __init__(self, settings: WeatherSettings) -> None:
        self.settings = settings

    @app_commands.command()
    @app_commands.describe(place="A city or place name")
    @app_commands.checks.cooldown(3, 30.0, key=lambda i: i.user.id)
    async def weather(self, interaction: discord.Interaction, place: str) -> None:
        """Show the current weather for a place."""
        try:
            query = clean(place, what="place name", max_length=100)
        except InputError as exc:
            await reject(interaction, str(exc))
            return
        await answer(
            interaction,
            service="Open-Meteo",
            not_found=f"No place found named {inline_code(query)}.",
            fetch=lambda: fetch_weather(self.settings, query),
            build=build_weather_embed,
        )

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Answer cooldowns privately."""
        await on_cooldown(interaction, error)


async def setup(bot: commands.Bot) -> None:
    """Load the weather cog."""
    await bot.add_cog(WeatherCog(WeatherSettings.from_env()))
