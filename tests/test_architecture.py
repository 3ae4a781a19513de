"""The layout's rules: httpx's and httpcore's private API is used from one module only."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import httpcore
import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "cogs", "services")
GLUE = ROOT / "services" / "transport" / "httpx_glue.py"
LIBRARIES = ("httpx", "httpcore")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _library_private_names() -> frozenset[str]:
    """Private attribute names of httpx's and httpcore's public classes and of live objects of theirs."""
    names: set[str] = set()
    for module in (httpx, httpcore):
        for public in module.__all__:
            obj = getattr(module, public)
            if isinstance(obj, type):
                names.update(n for n in dir(obj) if _private(n))
    samples: list[object] = [
        httpx.Headers({"a": "b"}),
        httpx.Request("GET", "http://127.0.0.1/"),
        httpx.Response(200),
        httpx.URL("http://127.0.0.1/"),
        httpx.Cookies(),
        httpx.AsyncClient(),
        httpx.AsyncHTTPTransport(),
        httpcore.AsyncConnectionPool(),
    ]
    for sample in samples:
        names.update(n for n in vars(sample) if _private(n))
    return frozenset(names)


def _sources() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path != GLUE:
                yield path


def _violations(path: Path, private_names: frozenset[str]) -> Iterator[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] in LIBRARIES and (
                any(_private(p) for p in parts[1:]) or any(_private(a.name) for a in node.names)
            ):
                yield f"{where}:{node.lineno} imports from {node.module}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in LIBRARIES and any(_private(p) for p in parts[1:]):
                    yield f"{where}:{node.lineno} imports {alias.name}"
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in LIBRARIES:
                yield f"{where}:{node.lineno} reaches {owner.id}.{node.attr}"
            elif node.attr in private_names and not (
                isinstance(owner, ast.Name) and owner.id in ("self", "cls")
            ):
                yield f"{where}:{node.lineno} reads .{node.attr}, private in httpx/httpcore"


def test_architecture_only_the_glue_module_touches_httpx_internals() -> None:
    private_names = _library_private_names()
    found = [v for path in _sources() for v in _violations(path, private_names)]
    assert found == [], "move into services/transport/httpx_glue.py:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from httpx._client import UseClientDefault\n", "imports from httpx._client"),
        ("import httpcore._async\n", "imports httpcore._async"),
        ("import httpx\nx = httpx._utils\n", "reaches httpx._utils"),
        ("def f(r):\n    return r.headers._list\n", "reads ._list"),
        ("def f(c, u):\n    return c._transport_for_url(u)\n", "reads ._transport_for_url"),
    ],
)
def test_architecture_check_catches_each_kind_of_private_use(
    tmp_path: Path, source: str, expected: str
) -> None:
    path = tmp_path / "probe.py"
    path.write_text(source)
    found = list(_violations(path, _library_private_names()))
    assert len(found) == 1
    assert expected in found[0]
