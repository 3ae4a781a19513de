"""A small fake Interaction for calling cog commands through `cmd.callback(cog, interaction, ...)`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import discord
import pytest


@dataclass
class Sent:
    """One message the fake interaction sent."""

    kind: str
    content: str | None = None
    embed: discord.Embed | None = None
    ephemeral: bool = False


@dataclass
class FakeResponse:
    """Records `interaction.response` calls."""

    sent: list[Sent]
    done: bool = False
    deferred_ephemeral: bool | None = None

    def is_done(self) -> bool:
        return self.done

    async def defer(self, *, ephemeral: bool = False, thinking: bool = False) -> None:
        assert not self.done, "responded twice"
        self.done = True
        self.deferred_ephemeral = ephemeral
        self.sent.append(Sent("defer", ephemeral=ephemeral))

    async def send_message(self, content: str | None = None, *, ephemeral: bool = False, **_: Any) -> None:
        assert not self.done, "responded twice"
        self.done = True
        self.sent.append(Sent("response", content, _.get("embed"), ephemeral))


@dataclass
class FakeFollowup:
    """Records `interaction.followup.send` calls."""

    sent: list[Sent]

    async def send(
        self, content: str | None = None, *, embed: discord.Embed | None = None, ephemeral: bool = False
    ) -> None:
        self.sent.append(Sent("followup", content, embed, ephemeral))


@dataclass
class FakeUser:
    """The invoking user."""

    id: int = 42


@dataclass
class FakeInteraction:
    """Just enough of discord.Interaction for the cogs."""

    sent: list[Sent] = field(default_factory=list)
    user: FakeUser = field(default_factory=FakeUser)
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.response = FakeResponse(self.sent)
        self.followup = FakeFollowup(self.sent)

    async def delete_original_response(self) -> None:
        self.sent.append(Sent("delete"))

    @property
    def reply(self) -> Sent:
        """The last message sent (not a defer or delete)."""
        return [s for s in self.sent if s.kind in {"response", "followup"}][-1]


@pytest.fixture
def interaction() -> FakeInteraction:
    """A fresh fake interaction."""
    return FakeInteraction()
