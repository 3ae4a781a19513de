"""`docker-compose.yml` runs Redis plus bot processes that split the shards (parsed; docker isn't run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.config import BotSettings

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "MTIz.NDU2.Nzg5"
Line = tuple[int, int, str]  # line number, indentation, text


def scalar(text: str) -> Any:
    """A plain, whole-number, double-quoted or flow-sequence scalar (the last three are JSON)."""
    return json.loads(text) if text.startswith(('"', "[")) or text.isdecimal() else text


def block(lines: list[Line], i: int, indent: int) -> tuple[Any, int]:
    """The mapping or sequence whose entries start at lines[i] with `indent` spaces; and the next line."""
    found: Any = [] if lines[i][2].startswith("- ") else {}
    while i < len(lines) and lines[i][1] == indent:
        number, _, text = lines[i]
        i += 1
        if isinstance(found, list):
            assert text.startswith("- "), f"line {number}: a mapping entry inside a sequence"
            found.append(scalar(text[2:].strip()))
            continue
        key, colon, rest = text.partition(":")
        assert colon and key and " " not in key, f"line {number}: expected `key: value`"
        assert key not in found, f"line {number}: {key} defined twice"
        if rest.strip():
            assert rest.startswith(" "), f"line {number}: no space after the colon"
            found[key] = scalar(rest.strip())
        else:
            assert i < len(lines) and lines[i][1] > indent, f"line {number}: {key} has no value"
            found[key], i = block(lines, i, lines[i][1])
    assert i == len(lines) or lines[i][1] < indent, f"line {lines[i][0]}: unexpected indentation"
    return found, i


def parse_compose(text: str) -> dict[str, Any]:
    """Parse the block-style YAML subset the compose file keeps to (no anchors, no trailing comments)."""
    assert "\t" not in text, "YAML forbids tabs for indentation"
    lines = [
        (number, len(raw) - len(raw.lstrip(" ")), raw.strip())
        for number, raw in enumerate(text.splitlines(), 1)
        if raw.strip() and not raw.strip().startswith("#")
    ]
    parsed, _ = block(lines, 0, 0)
    assert isinstance(parsed, dict)
    return parsed


def seconds(duration: str) -> float:
    """A compose duration such as `20s` or `1m30s`."""
    total, number = 0.0, ""
    for char in duration:
        if char.isdigit():
            number += char
        else:
            total += int(number) * {"s": 1, "m": 60, "h": 3600}[char]
            number = ""
    assert not number, f"{duration!r} lacks a unit"
    return total


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return parse_compose((ROOT / "docker-compose.yml").read_text())


def bots(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if name != "redis"}


def test_compose_parser_rejects_broken_structure() -> None:
    with pytest.raises(AssertionError, match="unexpected indentation"):
        parse_compose("services:\n  a:\n    b: 1\n   c: 2\n")
    with pytest.raises(AssertionError, match="defined twice"):
        parse_compose("a: 1\na: 2\n")
    with pytest.raises(AssertionError, match="has no value"):
        parse_compose("a:\nb: 1\n")
    assert parse_compose('a:\n  - x\n  - \'[1]\'\nb: ["c", "d"]\n') == {"a": ["x", "'[1]'"], "b": ["c", "d"]}


def test_compose_runs_redis_and_two_bot_processes(compose: dict[str, Any]) -> None:
    assert set(compose) == {"name", "services"}
    assert set(compose["services"]) == {"redis", "bot-0", "bot-1"}
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:")
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for service in bots(compose).values():
        assert service["build"] == "." and service["env_file"] == ".env"
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        # docker stop's grace covers the bot's own: running commands, then in-flight HTTP requests.
        defaults = BotSettings(token=TOKEN)
        assert seconds(service["stop_grace_period"]) >= defaults.shutdown_grace + defaults.http.drain_timeout


def test_compose_bots_split_the_shards_and_one_syncs(compose: dict[str, Any]) -> None:
    settings = {
        name: BotSettings.from_env({"DISCORD_TOKEN": TOKEN, **service["environment"]})
        for name, service in bots(compose).items()
    }
    counts = {s.shard_count for s in settings.values()}
    assert len(counts) == 1 and None not in counts
    (count,) = counts
    ids = [i for s in settings.values() for i in s.shard_ids or ()]
    assert sorted(ids) == list(range(count or 0))  # every shard run, by one process only
    assert [name for name, s in settings.items() if s.syncs_commands] == ["bot-0"]
    instances = [service["environment"]["COURIER_INSTANCE"] for service in bots(compose).values()]
    assert len(set(instances)) == len(instances)
