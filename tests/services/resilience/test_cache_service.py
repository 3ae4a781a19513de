"""The HTTP cache for GET against a real server: freshness, revalidation, bypass."""

from __future__ import annotations

from services.http_client import http_client
from tests.services.conftest import reply


async def test_cache_serves_fresh_response_without_a_request(fast, fault_server):
    url = fault_server.route("/fresh", reply(200, b'{"v": 1}', {"Cache-Control": "max-age=60"}))
    first = await http_client.get_json(url)
    second = await http_client.get_json(url)
    assert first == second == {"v": 1}
    assert fault_server.hits["/fresh"] == 1
    cache = http_client.get_pool_stats().cache
    assert (cache.hits, cache.misses, cache.entries) == (1, 1, 1)


async def test_cache_revalidates_with_etag_and_304(fast, fault_server):
    validated = {"ETag": '"v1"', "Cache-Control": "no-cache"}
    url = fault_server.route("/etag", reply(200, b"body-v1", validated), reply(304, headers={"ETag": '"v1"'}))
    assert (await http_client.get(url)).text == "body-v1"
    again = await http_client.get(url)
    assert (again.status_code, again.text) == (200, "body-v1")
    assert again.extensions["cache"] == "revalidated"
    assert fault_server.seen[1].headers["if-none-match"] == '"v1"'
    assert http_client.get_pool_stats().cache.revalidated == 1


async def test_cache_revalidates_with_last_modified(fast, fault_server):
    stamp = "Wed, 21 Oct 2015 07:28:00 GMT"
    url = fault_server.route(
        "/lm", reply(200, b"old", {"Last-Modified": stamp, "Cache-Control": "max-age=0"}), reply(304)
    )
    await http_client.get(url)
    assert (await http_client.get(url)).text == "old"
    assert fault_server.seen[1].headers["if-modified-since"] == stamp


async def test_cache_bypass_per_call(fast, fault_server):
    url = fault_server.route("/fresh", reply(200, b"x", {"Cache-Control": "max-age=60"}))
    await http_client.get(url)
    await http_client.get(url, cache=False)
    assert fault_server.hits["/fresh"] == 2


async def test_cache_respects_no_store_and_setting(fast, fault_server):
    url = fault_server.route("/private", reply(200, b"x", {"Cache-Control": "no-store"}))
    await http_client.get(url)
    await http_client.get(url)
    assert fault_server.hits["/private"] == 2
    fast(cache=False)
    other = fault_server.route("/fresh", reply(200, b"x", {"Cache-Control": "max-age=60"}))
    await http_client.get(other)
    await http_client.get(other)
    assert fault_server.hits["/fresh"] == 2
    assert http_client.get_pool_stats().cache.entries == 0


async def test_cache_keys_by_credentials(fast, fault_server):
    url = fault_server.route("/me", reply(200, b"x", {"Cache-Control": "max-age=60"}))
    await http_client.get(url, headers={"Authorization": "token a"})
    await http_client.get(url, headers={"Authorization": "token b"})
    await http_client.get(url, headers={"Authorization": "token a"})
    assert fault_server.hits["/me"] == 2


async def test_cache_revalidation_takes_the_304s_headers_and_its_freshness(fast, fault_server):
    first = {"ETag": '"v1"', "Cache-Control": "no-cache", "Content-Type": "text/plain", "X-Version": "1"}
    renewed = {"ETag": '"v1"', "Cache-Control": "max-age=60", "X-Version": "2"}
    url = fault_server.route("/renew", reply(200, b"body-v1", first), reply(304, headers=renewed))
    await http_client.get(url)
    again = await http_client.get(url)
    assert again.extensions["cache"] == "revalidated"
    assert (again.headers["x-version"], again.headers["content-type"]) == ("2", "text/plain")
    assert again.headers["content-length"] == "7" and again.text == "body-v1"
    third = await http_client.get(url)  # fresh for 60 s now: no request
    assert third.extensions["cache"] == "hit" and third.headers["x-version"] == "2"
    assert fault_server.hits["/renew"] == 2
    assert [s.headers.get("if-none-match") for s in fault_server.seen] == [None, '"v1"']
