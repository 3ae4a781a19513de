"""/http stats: the shared HTTP client's live figures, for the bot's owners and server admins."""

from __future__ import annotations

import time
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from cogs._embeds import FIELD_VALUE_LIMIT, make_embed
from services.errors import humanize_seconds
from services.http_client import http_client
from services.stats import (
    TREND_SLOT_SECONDS,
    TREND_SLOTS,
    BlockStats,
    ClusterStats,
    OriginTrend,
    PoolStats,
    sparkline,
)

REFUSAL = "Sorry, only the bot's owners and server administrators can see the HTTP statistics."
MAX_ORIGINS = 10
MAX_ERRORS = 8
MAX_BLOCKS = 8
MAX_ORIGIN_CHARS = 60
TRENDS_TITLE = f"Last hour ({TREND_SLOTS} slots of {TREND_SLOT_SECONDS // 60} min)"
MAX_PROCESSES = 8


def _n(value: int) -> str:
    return f"{value:,}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _pairs(counts: dict[str, int], limit: int) -> str:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = [f"{name} {_n(count)}" for name, count in ranked[:limit]]
    if len(ranked) > limit:
        shown.append(f"+{len(ranked) - limit} more")
    return " · ".join(shown)


def connections_text(stats: PoolStats) -> str:
    """Open/active/idle/queued connections and the configured limits."""
    if not stats.client_open:
        live = "No client open yet (built on first request)."
    elif not stats.available:
        live = "Live pool figures are unavailable with this httpx version."
    else:
        live = (
            f"**{_n(stats.connections)}** open · {_n(stats.active)} active · {_n(stats.idle)} idle"
            f"{f' · {_n(stats.connecting)} connecting' if stats.connecting else ''}\n"
            f"{_n(stats.queued)} queued · HTTP/1.1 {_n(stats.http1)} · HTTP/2 {_n(stats.http2)}"
        )
    limits = (
        f"limits: {_n(stats.max_connections)} max · {_n(stats.max_keepalive_connections)} keep-alive · "
        f"{stats.keepalive_expiry:g} s expiry"
    )
    return f"{live}\n{limits}"


def requests_text(stats: PoolStats) -> str:
    """Totals, in flight and outcomes by status class."""
    classes = _pairs(stats.by_status_class, 5) or "no answers yet"
    return f"**{_n(stats.requests_total)}** sent · {_n(stats.in_flight)} in flight\n{classes}"


def latency_text(stats: PoolStats) -> str:
    """Latency percentiles over the recent window."""
    lat = stats.latency
    if not lat.samples:
        return "no samples yet"
    spread = f"p50 {_ms(lat.p50_ms)} · p95 {_ms(lat.p95_ms)} · p99 {_ms(lat.p99_ms)}"
    return f"{spread}\nlast {_n(lat.samples)} requests"


def origins_text(stats: PoolStats) -> str:
    """The busiest origins, one line each: connections, in flight against the current limit, shed."""
    rows = sorted(stats.origins, key=lambda o: (-(o.connections + o.queued + o.shed), o.origin))
    lines = []
    for o in rows[:MAX_ORIGINS]:
        version = "h2" if o.http2 and not o.http1 else "h1+h2" if o.http2 else "h1"
        if o.streams:
            version += f" ({_n(o.streams)} streams)"
        queued = f", {o.queued} queued" if o.queued else ""
        slots = f" · {o.in_flight}/{o.limit} in flight" if o.limit is not None else ""
        shed = f", {_n(o.shed)} shed" if o.shed else ""
        lines.append(
            f"`{o.origin}` {o.connections} ({o.active} active, {o.idle} idle{queued}) {version}{slots}{shed}"
        )
    if len(rows) > MAX_ORIGINS:
        lines.append(f"+{len(rows) - MAX_ORIGINS} more origins")
    return "\n".join(lines) or "no connections"


def resilience_text(stats: PoolStats) -> str:
    """Retries, rate-limit refusals and circuit breakers that aren't closed."""
    lines = [f"{_n(stats.retries)} retries · {_n(stats.rate_limited)} rate-limited"]
    tripped = sorted((origin, state) for origin, state in stats.breakers.items() if state != "closed")
    lines += [f"`{origin}` circuit {state}" for origin, state in tripped[:MAX_ORIGINS]]
    if len(tripped) > MAX_ORIGINS:
        lines.append(f"+{len(tripped) - MAX_ORIGINS} more open circuits")
    if not tripped:
        lines.append(f"circuits: all closed ({len(stats.breakers)} hosts)")
    return "\n".join(lines)


def block_line(block: BlockStats) -> str:
    """One learned block: where, which partition and credential, and for how long still."""
    scope = block.partition or "all paths"
    if block.credential:
        scope += f", credential {block.credential}"
    return f"`{block.origin}` {scope}: blocked {humanize_seconds(block.seconds_left)} more"


def blocks_text(stats: PoolStats) -> str:
    """Quotas and Retry-After waits the upstreams asked of us, still in force."""
    lines = [block_line(b) for b in stats.blocks[:MAX_BLOCKS]]
    if len(stats.blocks) > MAX_BLOCKS:
        lines.append(f"+{len(stats.blocks) - MAX_BLOCKS} more blocks")
    return "\n".join(lines) or "none"


def cluster_text(cluster: ClusterStats) -> str:
    """Whether state is shared, cluster totals, and a row per process."""
    head = f"via `{cluster.backend}`: **{cluster.sharing}**"
    if cluster.detail:
        head += f"\n{cluster.detail}"
    lines = [
        head,
        f"{len(cluster.processes)} processes: {_n(cluster.requests_total)} sent · "
        f"{_n(cluster.in_flight)} in flight · {_n(cluster.errors)} errors · "
        f"{_n(cluster.cache_hits)} cache hits",
    ]
    for p in cluster.processes[:MAX_PROCESSES]:
        me = " (this one)" if p.instance == cluster.instance else ""
        lines.append(f"`{p.instance}`{me} {_n(p.requests_total)} sent · {_n(p.in_flight)} in flight")
    if len(cluster.processes) > MAX_PROCESSES:
        lines.append(f"+{len(cluster.processes) - MAX_PROCESSES} more processes")
    return "\n".join(lines)


def cache_text(stats: PoolStats) -> str:
    """GET cache hits, misses and revalidations, and its size."""
    c = stats.cache
    return (
        f"{_n(c.hits)} hits · {_n(c.misses)} misses · {_n(c.revalidated)} revalidated\n"
        f"{_n(c.entries)} entries · {c.bytes / 1024:,.0f} KiB"
        + (f" · {_n(c.shared_hits)} from other processes" if c.shared_hits else "")
    )


def trend_text(trend: OriginTrend) -> str:
    """Three lines for one origin: its name and volume, then p95 and errors as sparklines."""
    origin = (
        trend.origin if len(trend.origin) <= MAX_ORIGIN_CHARS else trend.origin[: MAX_ORIGIN_CHARS - 1] + "…"
    )
    worst = max((v for v in trend.p95_ms if v is not None), default=None)
    return (
        f"`{origin}` {_n(trend.requests)} requests\n"
        f"p95 {sparkline(trend.p95_ms)} max {_ms(worst)}\n"
        f"err {sparkline(tuple(None if e is None else float(e) for e in trend.errors))} "
        f"{_n(sum(e or 0 for e in trend.errors))}"
    )


def trends_text(stats: PoolStats) -> str:
    """The busiest origins' last hour, as many as fit one field."""
    blocks: list[str] = []
    for trend in stats.trends:
        block = trend_text(trend)
        if sum(len(b) + 1 for b in blocks) + len(block) > FIELD_VALUE_LIMIT:
            break
        blocks.append(block)
    return "\n".join(blocks) or "no requests in the last hour"


def build_stats_embed(stats: PoolStats) -> discord.Embed:
    """Shape a pool snapshot into an embed a person reads at a glance."""
    fields = [
        ("Connections", connections_text(stats)),
        ("Requests", requests_text(stats)),
        ("Latency", latency_text(stats)),
        ("Errors", _pairs(stats.errors, MAX_ERRORS) or "none"),
        ("Resilience", resilience_text(stats)),
        ("Rate-limit blocks", blocks_text(stats)),
        ("Cache", cache_text(stats)),
        ("Origins", origins_text(stats)),
        (TRENDS_TITLE, trends_text(stats)),
    ]
    if stats.cluster is not None:
        fields.append(("Cluster", cluster_text(stats.cluster)))
    return make_embed(
        title="Shared HTTP client",
        description=f"transport `{stats.transport}`",
        fields=fields,
        footer=time.strftime("snapshot %Y-%m-%d %H:%M:%S UTC", time.gmtime(stats.taken_at)),
    )


async def may_see_stats(interaction: discord.Interaction[Any]) -> bool:
    """Owners of the bot (BOT_OWNER_IDS, else the application's owners) and administrators."""
    if interaction.permissions.administrator:
        return True
    client = interaction.client
    # BotBase: both commands.Bot and AutoShardedBot (which is not a commands.Bot) know their owners.
    return isinstance(client, commands.bot.BotBase) and await client.is_owner(interaction.user)


class Admin(commands.Cog):
    """Commands for the people who run the bot."""

    http = app_commands.Group(name="http", description="The shared HTTP client")

    @http.command(name="stats")
    async def stats(self, interaction: discord.Interaction[Any]) -> None:
        """Live figures of the shared HTTP client: connections, requests, latency."""
        if not await may_see_stats(interaction):
            await interaction.response.send_message(REFUSAL, ephemeral=True)
            return
        await interaction.response.send_message(
            embed=build_stats_embed(http_client.get_pool_stats()), ephemeral=True
        )


async def setup(bot: commands.Bot) -> None:
    """Load the admin cog."""
    await bot.add_cog(Admin())
