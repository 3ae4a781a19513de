"""/define: an English dictionary lookup on dictionaryapi.dev."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import discord
from discord import app_commands
from discord.ext import commands

from cogs._embeds import make_embed
from cogs._replies import answer, inline_code, on_cooldown, reject, text
from cogs._validation import InputError, clean, env_url, join_url
from services.errors import BadResponseError
from services.http_client import http_client

DEFAULT_DICTIONARY_API_URL = "https://api.dictionaryapi.dev/api/v2/entries/en"
WORD_PATTERN = re.compile(r"[^\W\d_](?:[^\W\d_]|['\- ])*")
MAX_MEANINGS = 6


@dataclass(frozen=True, slots=True)
class Entry:
    """A word and its first definition per part of speech."""

    word: str
    phonetic: str | None
    meanings: tuple[tuple[str, str], ...]


async def fetch_definition(base_url: str, word: str) -> Entry:
    """Fetch the entries for `word` and keep the first definition of each part of speech."""
    data = await http_client.get_json(join_url(base_url, word))
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise BadResponseError("dictionary answer is not a list of entries")
    first = data[0]
    meanings: list[tuple[str, str]] = []
    for meaning in first.get("meanings") or []:
        if not isinstance(meaning, dict):
            continue
        defs = meaning.get("definitions")
        definition = (
            text(defs[0], "definition")
            if isinstance(defs, list) and defs and isinstance(defs[0], dict)
            else None
        )
        if definition:
            meanings.append((text(meaning, "partOfSpeech") or "meaning", definition))
    if not text(first, "word") or not meanings:
        raise BadResponseError("dictionary entry has no word or definitions")
    return Entry(
        word=str(first["word"]), phonetic=text(first, "phonetic"), meanings=tuple(meanings[:MAX_MEANINGS])
    )


def build_definition_embed(entry: Entry) -> discord.Embed:
    """Shape an Entry into an embed."""
    return make_embed(
        title=entry.word,
        description=entry.phonetic or "",
        fields=list(entry.meanings),
        footer="Free Dictionary API",
    )


class Dictionary(commands.Cog):
    """Word definitions."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    @app_commands.command()
    @app_commands.describe(word="An English word")
    @app_commands.checks.cooldown(3, 30.0, key=lambda i: i.user.id)
    async def define(self, interaction: discord.Interaction, word: str) -> None:
        """Define an English word."""
        try:
            cleaned = clean(word, what="word", max_length=64, pattern=WORD_PATTERN, path=True)
        except InputError as exc:
            await reject(interaction, str(exc))
            return
        await answer(
            interaction,
            service="The dictionary",
            not_found=f"No definition found for {inline_code(cleaned)}.",
            fetch=lambda: fetch_definition(self.base_url, cleaned),
            build=build_definition_embed,
        )

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Answer cooldowns privately."""
        await on_cooldown(interaction, error)


async def setup(bot: commands.Bot) -> None:
    """Load the dictionary cog."""
    await bot.add_cog(Dictionary(env_url(os.environ, "DICTIONARY_API_URL", DEFAULT_DICTIONARY_API_URL)))
