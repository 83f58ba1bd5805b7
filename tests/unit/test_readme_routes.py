"""The README's route tables list every route the gateway serves, each with the key it needs,
and name nothing it does not serve; its "Moving from llama-server" section names every
llama-server route that is not relayed (``relay/table.NOT_RELAYED``)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from fastapi.routing import iter_route_contexts

from supervisor.app import create_app
from supervisor.config import Settings
from supervisor.http.auth import required_access
from supervisor.relay.table import NOT_RELAYED, RELAYS

README = Path(__file__).resolve().parents[2] / "README.md"
MOVING = "## Moving from llama-server or router mode"
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}
# The cells of a route table's header: the route, the key it needs, what it does.
HEADER = ("route", "key", "what")

Route = tuple[str, str]  # (method, path), the path as the API document writes it


def route_tables(text: str) -> dict[Route, str]:
    """Each route in the README's route tables, with its key column. A route cell holds
    backticked ``METHOD /path`` items; a bare ``/path`` after one takes its method."""
    listed: dict[Route, str] = {}
    in_table = False
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            in_table = False
        elif tuple(cells[:3]) == HEADER:
            in_table = True
        elif in_table and not set(cells[0]) <= {"-", " "}:
            method = ""
            for item in re.findall(r"`([^`]+)`", cells[0]):
                words = item.split()
                if words[0] in METHODS:
                    method = words[0]
                for path in words[1:] if words[0] in METHODS else words:
                    listed[(method, path)] = cells[1]
    return listed


def key_class(method: str, path: str) -> str:
    """What ``auth.required_access`` says a route needs, in the README's words."""
    concrete = re.sub(r"\{[^}]+\}", "some-name", path)
    return required_access(method, concrete).name.lower()


def unlisted(listed: dict[Route, str], routes: set[Route]) -> list[str]:
    """The routes missing from the tables or listed with the wrong key."""
    wrong = []
    for method, path in sorted(routes):
        found = listed.get((method, path))
        if found != key_class(method, path):
            wrong.append(f"{method} {path}: README says {found!r}")
    return wrong


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def app_routes(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[Route], set[Route]]:
    """The API document's operations, and every (method, path) the app routes at all."""
    settings = Settings(
        models_dirs=[],
        llama_server=Path(sys.executable),
        data_dir=tmp_path_factory.mktemp("data"),
    )
    app = create_app(settings)
    documented = {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method.upper() in METHODS
    }
    served = {
        (method, str(route.path))
        for route in iter_route_contexts(app.routes)
        for method in getattr(route, "methods", None) or ()
    }
    return documented, served


def test_every_relayed_route_is_listed_with_its_key(readme: str) -> None:
    assert unlisted(route_tables(readme), set(RELAYS)) == []


def test_every_documented_route_is_listed_with_its_key(
    readme: str, app_routes: tuple[set[Route], set[Route]]
) -> None:
    documented, _ = app_routes
    assert len(documented) > 50  # the whole document was read
    assert unlisted(route_tables(readme), documented) == []


def test_every_listed_route_is_served_and_needs_the_key_it_says(
    readme: str, app_routes: tuple[set[Route], set[Route]]
) -> None:
    _, served = app_routes
    listed = route_tables(readme)
    assert set(listed) - served == set()
    assert unlisted(listed, set(listed)) == []


def test_dropping_a_row_from_the_readme_is_caught(readme: str) -> None:
    row = next(line for line in readme.splitlines() if line.startswith("| `POST /infill`"))
    assert ("POST", "/infill") in route_tables(readme)
    without = route_tables(readme.replace(row + "\n", ""))
    assert unlisted(without, {("POST", "/infill")}) == ["POST /infill: README says None"]


def test_every_route_not_relayed_is_named_in_the_moving_section(readme: str) -> None:
    section = readme.split(MOVING, 1)[1].split("\n## ", 1)[0]
    named = {word for item in re.findall(r"`([^`]+)`", section) for word in item.split()}
    missing = []
    for routes in NOT_RELAYED:
        paths = re.findall(r"(?<![\w/])/[\w{}/.-]*\w}?", routes)
        if not paths and routes not in section:
            missing.append(routes)
        missing += [f"{path} (of {routes})" for path in paths if path not in named]
    assert missing == []
