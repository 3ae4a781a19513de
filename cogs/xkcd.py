"""/xkcd: the latest comic, a given one, or a random one."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import discord
from discord import app_commands
from discord.ext import commands

from cogs._choices import autocomplete
from cogs._embeds import make_embed, web_url
from cogs._replies import answer, as_dict, number, on_cooldown, text
from cogs._validation import env_url
from services.errors import BadResponseError
from services.http_client import http_client

DEFAULT_XKCD_URL = "https://xkcd.com"
MISSING_COMIC = 404  # xkcd deliberately has no comic 404
MAX_COMIC = 100_000


@dataclass(frozen=True, slots=True)
class Comic:
    """One xkcd comic."""

    num: int
    title: str
    alt: str
    image: str | None


async def fetch_comic(base_url: str, num: int | None = None) -> Comic:
    """Fetch comic `num`, or the latest when None."""
    url = f"{base_url}/info.0.json" if num is None else f"{base_url}/{int(num)}/info.0.json"
    data = as_dict(await http_client.get_json(url), "xkcd")
    found = number(data, "num")
    if found is None or found < 1:
        raise BadResponseError(f"xkcd answer has no positive num: {data.get('num')!r:.40}")
    image = text(data, "img")
    return Comic(
        num=found,
        title=text(data, "safe_title") or text(data, "title") or f"xkcd {found}",
        alt=text(data, "alt") or "",
        image=web_url(image),
    )


async def fetch_random_comic(base_url: str, rng: random.Random | None = None) -> Comic:
    """Fetch the latest to learn the range, then a random comic other than 404."""
    latest = await fetch_comic(base_url)
    choices = [
        n for n in (rng or random).sample(range(1, latest.num + 1), min(2, latest.num)) if n != MISSING_COMIC
    ]
    return await fetch_comic(base_url, choices[0]) if choices else latest


def parse_number(text: str) -> int | None:
    """A comic number typed so far (ASCII digits within range), or None."""
    digits = text.strip()
    # str.isdigit() accepts "²" and int() refuses it; a long string would hit int's digit limit.
    if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(MAX_COMIC)):
        return None
    number = int(digits)
    return number if 1 <= number <= MAX_COMIC else None


def not_found_message(number: int | None) -> str:
    """What the user reads when xkcd answers 404 for the comic asked (or for the latest)."""
    if number is None:
        return "xkcd can't find its latest comic right now; please try again later."
    if number == 0:
        return "xkcd couldn't find a comic to pick at random; please try again later."
    return f"There is no xkcd number {number}."


def build_comic_embed(comic: Comic) -> discord.Embed:
    """Shape a Comic into an embed."""
    return make_embed(
        title=f"xkcd {comic.num}: {comic.title}",
        url=f"https://xkcd.com/{comic.num}/",
        image=comic.image,
        footer=comic.alt,
    )


class Xkcd(commands.Cog):
    """xkcd comics."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.latest_seen: int | None = None

    @app_commands.command()
    @app_commands.describe(number="Comic number; leave empty for the latest, 0 for a random one")
    @app_commands.checks.cooldown(3, 30.0, key=lambda i: i.user.id)
    async def xkcd(
        self, interaction: discord.Interaction, number: app_commands.Range[int, 0, MAX_COMIC] | None = None
    ) -> None:
        """Show an xkcd comic: the latest, a given number, or 0 for a random one."""
        if number is not None and not 0 <= number <= MAX_COMIC:
            await interaction.response.send_message("Give a comic number from 1 up.", ephemeral=True)
            return

        async def fetch() -> Comic:
            if number is None:
                comic = await fetch_comic(self.base_url)
                self.latest_seen = comic.num
                return comic
            if number == 0:
                return await fetch_random_comic(self.base_url)
            return await fetch_comic(self.base_url, number)

        await answer(
            interaction,
            service="xkcd",
            not_found=not_found_message(number),
            fetch=fetch,
            build=build_comic_embed,
        )

    @xkcd.autocomplete("number")
    @autocomplete
    async def xkcd_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[tuple[str, int]]:
        """Offer the typed number, random and the latest known comic; no network."""
        choices = []
        typed = parse_number(current)
        if typed is not None:
            choices.append((f"#{typed}", typed))
        choices.append(("Random comic", 0))
        if self.latest_seen is not None:
            choices.append((f"Latest (#{self.latest_seen})", self.latest_seen))
        return choices

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Answer cooldowns privately."""
        await on_cooldown(interaction, error)


async def setup(bot: commands.Bot) -> None:
    """Load the xkcd cog."""
    await bot.add_cog(Xkcd(env_url(os.environ, "XKCD_URL", DEFAULT_XKCD_URL)))
