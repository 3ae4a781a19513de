"""The response cache's rules and bounds, without a network."""

from __future__ import annotations

import httpx
import pytest

from services.resilience.cache import ResponseCache, freshness_lifetime, parse_cache_control


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fetched(url: str, body: bytes, **headers: str) -> tuple[httpx.Request, httpx.Response]:
    request = httpx.Request("GET", url)
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return request, httpx.Response(200, headers=named, content=body, request=request)


def test_cache_evicts_least_recently_used_past_max_entries():
    cache = ResponseCache(max_entries=2, max_bytes=10_000)
    for name in ("a", "b", "c"):
        request, response = fetched(f"https://x.test/{name}", b"1", cache_control="max-age=60")
        cache.store(cache.key(request) or "", request, response)
    assert cache.stats().entries == 2
    assert cache.lookup("https://x.test/a", httpx.Request("GET", "https://x.test/a")) == (None, False)


def test_cache_stays_within_max_bytes():
    cache = ResponseCache(max_entries=100, max_bytes=5_000)
    for i in range(10):
        request, response = fetched(f"https://x.test/{i}", b"z" * 1_000, cache_control="max-age=60")
        cache.store(cache.key(request) or "", request, response)
    assert cache.stats().bytes <= 5_000
    too_big_request, too_big = fetched("https://x.test/big", b"z" * 6_000, cache_control="max-age=60")
    cache.store("https://x.test/big", too_big_request, too_big)
    assert cache.lookup("https://x.test/big", too_big_request)[0] is None


def test_cache_entry_goes_stale_after_max_age_minus_age():
    clock = Clock()
    cache = ResponseCache(10, 10_000, clock=clock)
    request, response = fetched("https://x.test/", b"1", cache_control="max-age=60", age="50")
    cache.store("k", request, response)
    assert cache.lookup("k", request)[1] is True
    clock.now += 11
    assert cache.lookup("k", request)[1] is False


def test_cache_varies_on_listed_request_headers():
    cache = ResponseCache(10, 10_000)
    request = httpx.Request("GET", "https://x.test/", headers={"Accept": "a"})
    response = httpx.Response(200, headers={"Cache-Control": "max-age=60", "Vary": "Accept"}, request=request)
    cache.store("k", request, response)
    assert cache.lookup("k", request)[0] is not None
    assert cache.lookup("k", httpx.Request("GET", "https://x.test/", headers={"Accept": "b"}))[0] is None


@pytest.mark.parametrize(
    "request_headers",
    [{"If-None-Match": '"x"'}, {"Range": "bytes=0-1"}, {"Cache-Control": "no-store"}],
)
def test_cache_stays_out_of_conditional_and_no_store_requests(request_headers):
    assert (
        ResponseCache(10, 10_000).key(httpx.Request("GET", "https://x.test/", headers=request_headers))
        is None
    )
    assert ResponseCache(10, 10_000).key(httpx.Request("POST", "https://x.test/")) is None


def test_cache_does_not_store_what_it_cannot_revalidate():
    cache = ResponseCache(10, 10_000)
    request, response = fetched("https://x.test/", b"1")
    cache.store("k", request, response)
    assert cache.stats().entries == 0


def test_freshness_from_expires_minus_date():
    headers = httpx.Headers(
        {"Date": "Wed, 21 Oct 2015 07:28:00 GMT", "Expires": "Wed, 21 Oct 2015 07:29:00 GMT"}
    )
    assert freshness_lifetime(headers, {}) == 60
    assert freshness_lifetime(httpx.Headers({"Expires": "0"}), {}) < 0
    assert parse_cache_control('max-age=5, No-Cache, private="x"') == {
        "max-age": "5",
        "no-cache": None,
        "private": "x",
    }


def test_cache_response_hands_over_the_stored_body_and_headers_as_they_were():
    cache = ResponseCache(10, 1_000_000)
    request, response = fetched(
        "https://x.test/", b"z" * 100_000, cache_control="max-age=60", etag='"a"', content_type="x/y"
    )
    cache.store("k", request, response)
    entry, fresh = cache.lookup("k", request)
    assert entry is not None and fresh
    served = cache.response(entry, request, "hit")
    assert served.content is entry.body  # no copy of a 100 KB body per hit or revalidation
    assert served.headers["content-type"] == "x/y" and served.headers["content-length"] == "100000"
    assert served.headers.raw[0] == (b"cache-control", b"max-age=60")
    served.headers["x-caller"] = "changed"  # a caller's edit stays out of the store
    assert "x-caller" not in cache.response(entry, request, "hit").headers
    revalidating = httpx.Request("GET", "https://x.test/")
    assert cache.add_validators(revalidating, entry)
    assert revalidating.headers["if-none-match"] == '"a"'


def not_modified(request: httpx.Request, *headers: tuple[str, str]) -> httpx.Response:
    return httpx.Response(304, headers=[*headers, ("Connection", "keep-alive")], request=request)


def test_cache_freshen_restarts_freshness_when_a_304_repeats_the_last_one():
    clock = Clock()
    cache = ResponseCache(10, 10_000, clock=clock)
    request, response = fetched("https://x.test/", b"body", etag='"a"', cache_control="no-cache", x_v="1")
    cache.store("k", request, response)
    entry, _ = cache.lookup("k", request)
    assert entry is not None
    renewed = (("ETag", '"a"'), ("Cache-Control", "max-age=60"), ("Age", "10"), ("X-V", "2"))
    cache.freshen("k", entry, not_modified(request, *renewed))
    assert entry.fresh_until == 1050.0
    headers = entry.raw_headers
    clock.now += 100
    assert cache.lookup("k", request)[1] is False
    cache.freshen("k", entry, not_modified(request, *renewed))  # the same fields: only freshness moves
    assert entry.fresh_until == 1150.0 and entry.raw_headers == headers
    assert cache.lookup("k", request)[1] is True
    assert cache.response(entry, request, "revalidated").headers["x-v"] == "2"


def test_cache_freshen_takes_a_304_that_differs_from_the_last_one():
    clock = Clock()
    cache = ResponseCache(10, 10_000, clock=clock)
    request, response = fetched("https://x.test/", b"body", etag='"a"', cache_control="no-cache")
    cache.store("k", request, response)
    entry, _ = cache.lookup("k", request)
    assert entry is not None
    cache.freshen("k", entry, not_modified(request, ("ETag", '"a"'), ("Cache-Control", "no-cache")))
    cache.freshen("k", entry, not_modified(request, ("ETag", '"a"'), ("Cache-Control", "no-cache")))
    # RFC 9111 §3.2: each field of the 304 replaces the stored one, validators included.
    cache.freshen("k", entry, not_modified(request, ("ETag", '"b"'), ("Cache-Control", "max-age=30")))
    assert entry.fresh_until == 1030.0
    revalidating = httpx.Request("GET", "https://x.test/")
    cache.add_validators(revalidating, entry)
    assert revalidating.headers["if-none-match"] == '"b"'
    served = cache.response(entry, request, "revalidated")
    assert served.headers.get_list("etag") == ['"b"'] and served.headers["cache-control"] == "max-age=30"
    assert "connection" not in served.headers and served.headers["content-length"] == "4"


def test_cache_freshen_counts_expires_without_date_from_each_304s_arrival(monkeypatch):
    clock = Clock()
    cache = ResponseCache(10, 10_000, clock=clock)
    request, response = fetched("https://x.test/", b"body", etag='"a"')  # stale at once
    cache.store("k", request, response)
    entry, _ = cache.lookup("k", request)
    assert entry is not None
    expiring = (("ETag", '"a"'), ("Expires", "Wed, 21 Oct 2015 07:29:00 GMT"))
    expires = 1445412540.0  # that Expires, as a timestamp
    monkeypatch.setattr("services.resilience.cache.time.time", lambda: expires - 60)
    cache.freshen("k", entry, not_modified(request, *expiring))
    assert entry.fresh_until == 1060.0
    # The same 304 twenty seconds later: Expires minus its own time of receipt (RFC 9111 §4.2.1).
    monkeypatch.setattr("services.resilience.cache.time.time", lambda: expires - 40)
    cache.freshen("k", entry, not_modified(request, *expiring))
    assert entry.fresh_until == 1040.0


def test_cache_reads_a_request_again_once_it_changed_between_sends():
    cache = ResponseCache(10, 10_000)
    request = httpx.Request("GET", "https://x.test/")
    assert cache.admits(request) and cache.key(request) == "https://x.test/"
    request.headers["If-None-Match"] = '"mine"'  # the caller revalidates on its own next time
    assert not cache.admits(request)
    assert cache.key(request) is None


def test_cache_key_after_add_validators_sees_the_conditional_request():
    cache = ResponseCache(10, 10_000)
    request, response = fetched("https://x.test/", b"body", etag='"a"', cache_control="no-cache")
    cache.store("https://x.test/", request, response)
    revalidating = httpx.Request("GET", "https://x.test/")
    assert cache.admits(revalidating)
    entry, fresh = cache.lookup("https://x.test/", revalidating)
    assert entry is not None and not fresh
    assert cache.add_validators(revalidating, entry)
    assert cache.key(revalidating) is None  # what it read before the validators went in is dropped


def test_cache_lookup_honours_the_admitted_requests_no_cache():
    cache = ResponseCache(10, 10_000)
    request, response = fetched("https://x.test/", b"body", cache_control="max-age=60")
    cache.store("https://x.test/", request, response)
    insisting = httpx.Request("GET", "https://x.test/", headers={"Cache-Control": "no-cache"})
    assert cache.admits(insisting) and cache.key(insisting) == "https://x.test/"
    assert cache.lookup("https://x.test/", insisting) == (cache.lookup("https://x.test/", request)[0], False)
    assert cache.lookup("https://x.test/", request)[1] is True


def test_cache_storable_reads_every_cache_control_line():
    request = httpx.Request("GET", "https://x.test/")
    two_lines = httpx.Response(
        200, headers=[("Cache-Control", "max-age=60"), ("Cache-Control", "no-store")], request=request
    )
    assert not ResponseCache.storable(two_lines)
    assert ResponseCache.storable(
        httpx.Response(200, headers={"Cache-Control": "max-age=60"}, request=request)
    )
    assert ResponseCache.storable(httpx.Response(200, headers={"ETag": '"v1"'}, request=request))
    assert not ResponseCache.storable(httpx.Response(200, headers={"Content-Type": "x/y"}, request=request))


def test_cache_keys_a_plain_request_by_its_url_and_a_credentialed_one_apart():
    cache = ResponseCache(10, 10_000)
    assert cache.key(httpx.Request("GET", "https://x.test/a")) == "https://x.test/a"
    with_token = cache.key(
        httpx.Request("GET", "https://x.test/a", headers={"Authorization": "Bearer s3cret"})
    )
    assert with_token is not None and with_token.startswith("https://x.test/a#")
    assert "s3cret" not in with_token
