"""The Bot subclass: loads the cogs, syncs commands once per change, answers every failure politely."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import json
import pkgutil
import time
from pathlib import Path
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands
from loguru import logger

from bot.config import BotSettings
from bot.health import HEALTH_INTERVAL
from bot.metrics import BotMetrics
from services.config import SettingsError
from services.errors import CourierHTTPError, humanize_seconds
from services.http_client import http_client

COGS_PACKAGE = "cogs"
UNEXPECTED = "Something went wrong on our side; it has been logged. Please try again later."


def discover_extensions(package: str = COGS_PACKAGE) -> list[str]:
    """Every extension module in `package`; modules starting with `_` are helpers, not extensions."""
    module = importlib.import_module(package)
    return sorted(
        f"{package}.{info.name}"
        for info in pkgutil.iter_modules(module.__path__)
        if not info.name.startswith("_") and not info.ispkg
    )


def user_message(error: app_commands.AppCommandError) -> str:
    """The short sentence a user reads when a command fails."""
    original = getattr(error, "original", error)
    if isinstance(original, CourierHTTPError):
        return original.user_message
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down: try again in {humanize_seconds(error.retry_after)}."
    if isinstance(error, app_commands.BotMissingPermissions):
        return "I don't have the permissions this command needs here."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in a server."
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command."
    if isinstance(error, app_commands.TransformerError):
        return f"That value doesn't look right for `{error.value!s:.50}`."
    return UNEXPECTED


async def send_private(interaction: discord.Interaction[Any], message: str) -> None:
    """Reply privately whether or not the interaction was already acknowledged."""
    if not interaction.response.is_done():
        await interaction.response.send_message(message, ephemeral=True)
        return
    if interaction.response.type == discord.InteractionResponseType.deferred_channel_message:
        # A public "thinking…" would make the followup public too; remove it first.
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
    await interaction.followup.send(message, ephemeral=True)


class CourierTree(app_commands.CommandTree["Courier"]):
    """A command tree that tracks running commands and turns any failure into an ephemeral reply."""

    def __init__(self, client: Courier) -> None:
        super().__init__(client)
        self.running: set[asyncio.Task[Any]] = set()
        self.accepting = True

    async def interaction_check(self, interaction: discord.Interaction[Courier], /) -> bool:
        """Refuse new commands while shutting down; remember the ones that run."""
        if not self.accepting:
            with contextlib.suppress(discord.HTTPException):
                await interaction.response.send_message(
                    "I'm restarting; please try again in a minute.", ephemeral=True
                )
            return False
        task = asyncio.current_task()
        if task is not None and interaction.type is discord.InteractionType.application_command:
            self.running.add(task)
            task.add_done_callback(self.running.discard)
        return True

    async def on_error(
        self, interaction: discord.Interaction[Courier], error: app_commands.AppCommandError
    ) -> None:
        """Log the detail and give the user one short private reply, unless one was already sent."""
        name = interaction.command.qualified_name if interaction.command else "?"
        original = getattr(error, "original", error)
        if self.client.metrics is not None and interaction.command is not None:
            outcome = "failure" if isinstance(error, app_commands.CommandInvokeError) else "refused"
            self.client.metrics.commands.count(name, outcome)
        if isinstance(original, CourierHTTPError):
            logger.warning("/{} failed upstream: {}", name, original)
        elif isinstance(error, app_commands.CommandInvokeError):
            logger.opt(exception=original).error("/{} raised {}", name, type(original).__name__)
        else:
            logger.info("/{} refused for user {}: {}", name, interaction.user.id, error)
        if interaction.extras.get("error_handled") or (
            isinstance(error, app_commands.CommandOnCooldown) and interaction.response.is_done()
        ):
            return  # the command or its cog already answered
        try:
            await send_private(interaction, user_message(error))
        except discord.HTTPException as exc:
            logger.warning("could not tell the user /{} failed: {}", name, exc)

    async def drain(self, grace: float) -> None:
        """Stop taking commands and wait up to `grace` seconds for running ones to finish."""
        self.accepting = False
        running = self.running - {asyncio.current_task()}
        if not running or grace <= 0:
            return
        logger.info("waiting up to {}s for {} running command(s)", grace, len(running))
        _, pending = await asyncio.wait(running, timeout=grace)
        if pending:
            logger.warning("{} command(s) still running after {}s; closing anyway", len(pending), grace)


class Courier(commands.AutoShardedBot):
    """Courier: slash commands over one shared HTTP client, running the shards it is given."""

    tree: CourierTree

    def __init__(self, settings: BotSettings) -> None:
        # No voice here: skip discord.py's start-up warnings about voice libraries.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        intents = discord.Intents.none()
        intents.guilds = True  # guild and channel context for interactions; nothing privileged
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=CourierTree,
            owner_ids=set(settings.owner_ids) or None,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            # Both None (discord.py's defaults; its hints only spell out the list): Discord's
            # recommended shard count, all in this process.
            shard_count=settings.shard_count,
            shard_ids=list(settings.shard_ids) if settings.shard_ids is not None else None,  # type: ignore[arg-type]
        )
        self.settings = settings
        self.failed_extensions: dict[str, str] = {}
        self._health_task: asyncio.Task[None] | None = None
        self.shutting_down = False
        self.metrics = BotMetrics(self, http_client) if settings.metrics_port is not None else None

    async def setup_hook(self) -> None:
        """Load every cog, then sync the application commands if they changed."""
        await self.load_cogs()
        if self.metrics is not None:
            self.metrics.install()
            self.metrics.commands.declare(
                c.qualified_name for c in self.tree.walk_commands() if isinstance(c, app_commands.Command)
            )
        await self.sync_commands()
        if self.settings.health_file is not None:
            self._health_task = asyncio.create_task(self._beat(self.settings.health_file), name="health")

    async def load_cogs(self) -> None:
        """Load each extension; one that is misconfigured or broken is skipped, the rest still run."""
        for name in discover_extensions():
            try:
                await self.load_extension(name)
            except commands.ExtensionFailed as exc:
                self.failed_extensions[name] = str(exc.original)
                if isinstance(exc.original, SettingsError):
                    logger.warning("{} not loaded: {}", name, exc.original)
                else:
                    logger.opt(exception=exc.original).error("{} failed to load", name)
            except commands.ExtensionError as exc:
                self.failed_extensions[name] = str(exc)
                logger.opt(exception=exc).error("{} failed to load", name)
        logger.info("loaded {} cog(s): {}", len(self.cogs), ", ".join(sorted(self.cogs)))

    def command_payload(self, guild: discord.Object | None) -> list[dict[str, Any]]:
        """What a sync would send to Discord for `guild` (None: global)."""
        return [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]

    async def sync_commands(self) -> None:
        """Sync to DISCORD_GUILD_ID when set, else globally; skip when the payload hasn't changed."""
        mode = self.settings.command_sync
        if mode == "never":
            return
        if not self.settings.syncs_commands:
            # Commands belong to the application, not a shard: one sync serves every process.
            logger.info("not syncing application commands: the process running shard 0 does")
            return
        if mode == "auto" and self.failed_extensions:
            # A sync now would delete the failed cogs' commands from every server until the next fix.
            logger.warning(
                "not syncing application commands: {} extension(s) failed to load ({}); Discord keeps the "
                "commands it has. Fix the error above, or set COMMAND_SYNC=always to sync without them",
                len(self.failed_extensions),
                ", ".join(sorted(self.failed_extensions)),
            )
            return
        guild = discord.Object(self.settings.guild_id) if self.settings.guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        scope = f"guild {guild.id}" if guild else "global"
        app_id = self.application_id or 0
        digest = hashlib.sha256(
            json.dumps(self.command_payload(guild), sort_keys=True, default=str).encode()
        ).hexdigest()
        state = SyncState(self.settings.state_dir / "command-sync.json")
        key = f"{app_id}:{scope}"
        if mode == "auto" and state.get(key) == digest:
            logger.info("application commands unchanged ({}); not syncing", scope)
            return
        try:
            synced = await self.tree.sync(guild=guild)
        except discord.Forbidden:
            logger.error(
                "Discord refused the command sync ({}): invite the bot with the applications.commands scope",
                scope,
            )
            return
        except discord.HTTPException as exc:
            logger.error("command sync failed ({}): {} {}", scope, exc.status, exc.text)
            return
        state.put(key, digest)
        logger.info("synced {} application command(s) ({})", len(synced), scope)

    async def on_ready(self) -> None:
        """Log who we are once every shard of this process is ready."""
        user = self.user
        logger.info(
            "connected as {} ({}) in {} guild(s), shard(s) {} of {}",
            user,
            user.id if user else "?",
            len(self.guilds),
            format_shard_ids(sorted(self.shards)),
            self.shard_count,
        )

    async def on_shard_ready(self, shard_id: int) -> None:
        """Log each shard as it becomes ready."""
        logger.info("shard {} of {} ready", shard_id, self.shard_count)

    def connected(self) -> bool:
        """Ready, and every shard's gateway connection open."""
        shards = self.shards.values()
        return self.is_ready() and bool(shards) and not any(shard.is_closed() for shard in shards)

    async def on_app_command_completion(
        self, interaction: discord.Interaction[Courier], command: app_commands.Command[Any, ..., Any]
    ) -> None:
        """Count a command that ran to the end."""
        if self.metrics is not None:
            self.metrics.commands.count(command.qualified_name, "success")

    def health(self) -> tuple[bool, str]:
        """Whether an orchestrator should route to this process, and why."""
        if self.shutting_down or http_client.closing:
            return False, "shutting down"
        if not self.is_ready():
            return False, "waiting for the first READY from Discord"
        if not self.connected():
            return False, "reconnecting to Discord"
        return True, f"connected to Discord in {len(self.guilds)} guild(s)"

    async def _beat(self, path: Path) -> None:
        """Touch `path` while connected, so the container health check can tell."""
        while not self.is_closed():
            write_health(path, connected=self.connected())
            await asyncio.sleep(HEALTH_INTERVAL)

    async def close(self) -> None:
        """Let running commands finish, close Discord (unloads cogs), then drain the HTTP client."""
        self.shutting_down = True
        await self.tree.drain(self.settings.shutdown_grace)
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None
        if self.settings.health_file is not None:
            write_health(self.settings.health_file, connected=False)
        await super().close()
        await http_client.close()
        if self.metrics is not None:
            self.metrics.uninstall()


def format_shard_ids(ids: list[int]) -> str:
    """Shard ids the way SHARD_IDS takes them: `0-3,8`."""
    runs: list[list[int]] = []
    for shard_id in ids:
        if runs and shard_id == runs[-1][1] + 1:
            runs[-1][1] = shard_id
        else:
            runs.append([shard_id, shard_id])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or "none"


def write_health(path: Path, *, connected: bool) -> None:
    """Touch the health file when connected, remove it when not (a few bytes: no need for a thread)."""
    try:
        if connected:
            path.write_text(f"{time.time():.0f}\n")
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("cannot write health file {}: {}", path, exc)


class SyncState:
    """A small JSON file remembering the hash of the last command payload synced per scope."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def get(self, key: str) -> str | None:
        """The digest stored for `key`, if any."""
        return self._read().get(key)

    def put(self, key: str, digest: str) -> None:
        """Remember `digest` for `key`; a read-only disk only costs a sync next start."""
        data = self._read()
        data[key] = digest
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
            tmp.replace(self.path)
        except OSError as exc:
            logger.warning("cannot remember the command sync in {}: {}", self.path, exc)
