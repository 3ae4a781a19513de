"""A URL's origin text, remembered per URL object."""

from __future__ import annotations

import httpx

from services import origin
from services.origin import origin_of


def test_origin_of_spells_out_the_default_port() -> None:
    assert origin_of(httpx.URL("https://api.github.com/x?q=1")) == "https://api.github.com:443"
    assert origin_of(httpx.URL("http://example.test/")) == "http://example.test:80"
    assert origin_of(httpx.URL("http://127.0.0.1:8080/a")) == "http://127.0.0.1:8080"


def test_origin_of_answers_each_url_object_for_itself_whatever_it_remembers() -> None:
    first = httpx.URL("https://a.test/one")
    assert origin_of(first) == origin_of(first) == "https://a.test:443"
    # Another URL under the remembered id (as after the first is freed) must not get its origin.
    origin._origins[id(first)] = (httpx.URL("https://stale.test/"), "https://stale.test:443")
    assert origin_of(first) == "https://a.test:443"


def test_origin_of_forgets_past_its_bound() -> None:
    urls = [httpx.URL(f"http://h{i}.test/") for i in range(origin._ORIGINS_SIZE + 10)]
    for url in urls:
        origin_of(url)
    assert len(origin._origins) <= origin._ORIGINS_SIZE
    assert origin_of(urls[0]) == "http://h0.test:80"
