"""The web console's files (supervisor/console/): served from the package with their types and
the security headers, public with keys configured, nothing outside the static folder reachable,
and the page whole (every file it names is shipped, nothing from another origin, no inline
script or style that the CSP would refuse)."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fakes import FakeFactory
from served import MakeSettings, Serve, served

from supervisor.app import create_app
from supervisor.console.routes import SECURITY_HEADERS, STATIC, read_files

CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"


def assert_secure(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"


def test_ui_redirects_to_the_page(client: httpx.Client) -> None:
    response = client.get("/ui", follow_redirects=False)
    assert response.status_code in (307, 308)
    assert response.headers["location"] == "/ui/"
    assert_secure(response)


def test_the_page_is_served_with_the_security_headers(client: httpx.Client) -> None:
    response = client.get("/ui/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="app.js"></script>' in response.text
    assert_secure(response)


def test_each_file_is_served_as_shipped_with_its_type(client: httpx.Client) -> None:
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    for path in sorted(STATIC.rglob("*")):
        if path.suffix not in types:
            continue
        name = path.relative_to(STATIC).as_posix()
        response = client.get(f"/ui/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == types[path.suffix], name
        assert response.content == path.read_bytes(), name
        assert_secure(response)
    assert client.get("/ui/views/models.js").status_code == 200  # the views' folder too


def test_head_answers_like_get(client: httpx.Client) -> None:
    response = client.head("/ui/app.js")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert_secure(response)


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nothing.js",
        "/ui/views/",
        "/ui/%2e%2e/routes.py",
        "/ui/..%2froutes.py",
        "/ui/views/%2e%2e/%2e%2e/routes.py",
        "/ui/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
        "/ui//etc/passwd",
        "/ui/%2fetc%2fpasswd",
        "/ui/routes.py",
        "/ui/__init__.py",
    ],
)
def test_anything_else_is_a_404_with_the_headers(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert_secure(response)


def test_a_raw_dot_dot_path_reaches_nothing(make_settings: MakeSettings) -> None:
    """``..`` sent as it is (clients normally fold it away before sending)."""
    settings = make_settings()
    with served(create_app(settings, factory=FakeFactory()), settings) as url:
        host, port = urlsplit(url).hostname, urlsplit(url).port
        for path in ("/ui/../console/routes.py", "/ui/views/../../routes.py", "/ui/../../app.py"):
            with socket.create_connection((host, port), timeout=10) as conn:
                conn.sendall(
                    f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                )
                answer = b""
                while chunk := conn.recv(65536):
                    answer += chunk
            head = answer.split(b"\r\n\r\n", 1)[0].decode()
            assert head.startswith("HTTP/1.1 404"), (path, head)
            assert "content-security-policy:" in head.lower()


def test_the_console_is_public_when_keys_are_configured(serve: Serve) -> None:
    with serve(api_keys=["inference-key"], admin_keys=["admin-key"]) as client:
        assert client.get("/ui/").status_code == 200
        assert client.get("/ui/app.js").status_code == 200
        assert client.get("/api/v2/models").status_code == 401


def test_symlinks_and_unknown_types_are_not_served(tmp_path: Path) -> None:
    outside = tmp_path / "secret.js"
    outside.write_text("secret")
    static = tmp_path / "static"
    (static / "views").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html>")
    (static / "views" / "a.js").write_text("export {}")
    (static / "notes.txt").write_text("not a console file")
    (static / ".hidden.js").write_text("hidden")
    (static / "link.js").symlink_to(outside)
    (static / "linked").symlink_to(tmp_path)
    assert sorted(read_files(static)) == ["index.html", "views/a.js"]
    assert read_files(tmp_path / "missing") == {}


def test_security_headers_are_the_contracts() -> None:
    assert SECURITY_HEADERS["Content-Security-Policy"] == CSP


def referenced_by_page(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#]+)"', html)


def test_every_file_the_page_names_is_shipped() -> None:
    html = (STATIC / "index.html").read_text()
    named = referenced_by_page(html)
    assert {"app.js", "console.css", "charts.css"} <= set(named)
    assert [name for name in named if not (STATIC / name).is_file()] == []


def test_every_static_import_is_shipped() -> None:
    """A relative ``import … from "./x.js"`` in any module names a file that is there
    (the views imported on demand, by name, may be missing: app.js says so on the page)."""
    missing = []
    for script in STATIC.rglob("*.js"):
        for target in re.findall(r'^import\b[^;]*?from\s+"(\.[^"]+)"', script.read_text(), re.M):
            if not (script.parent / target).resolve().is_file():
                missing.append(f"{script.name}: {target}")
    assert missing == []


def test_nothing_comes_from_another_origin_and_nothing_inline() -> None:
    """The CSP (default-src 'self') would refuse these: keep them out of the files."""
    html = (STATIC / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert " style=" not in html and "<style" not in html
    assert not re.search(r"\son[a-z]+=", html)  # inline event handlers
    for path in STATIC.rglob("*"):
        if path.is_file():
            # XML namespaces (SVG's "http://www.w3.org/2000/svg") are names, never fetched.
            text = re.sub(r"http://www\.w3\.org/[\w/]+", "", path.read_text())
            assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), path


# What would put text in the page as HTML or code, or set a style the CSP refuses (a style
# attribute, set as one or through ``.style =``): the console builds its DOM with ui.js's
# el(), which does none of these.
UNSAFE_JS = {
    "innerHTML": r"\binnerHTML\b",
    "outerHTML": r"\bouterHTML\b",
    "insertAdjacentHTML": r"\binsertAdjacentHTML\b",
    "document.write": r"\bdocument\.write(?:ln)?\b",
    "eval": r"(?<![\w.])eval\s*\(",
    "new Function": r"\bnew\s+Function\b",
    "string timer": r"\bset(?:Timeout|Interval)\(\s*[\"'`]",
    ".style =": r"\.style\s*=(?!=)",
    ".style.x =": r"\.style\.\w+\s*=(?!=)",
    "setAttribute(style)": r"setAttribute\(\s*[\"'`]style[\"'`]",
    "cssText": r"\bcssText\b",
}


@pytest.mark.parametrize("construct", sorted(UNSAFE_JS))
def test_no_script_builds_html_or_styles_inline(construct: str) -> None:
    found = [
        f"{path.relative_to(STATIC)}:{number}"
        for path in sorted(STATIC.rglob("*.js"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(UNSAFE_JS[construct], line)
    ]
    assert found == [], construct


@pytest.mark.parametrize(
    "line",
    [
        "node.innerHTML = text;",
        "row.insertAdjacentHTML('beforeend', html);",
        "document.write(x);",
        "eval(code)",
        "node.style = 'color: red';",
        "node.style.color = 'red';",
        'node.setAttribute("style", "x");',
        'setTimeout("run()", 10);',
    ],
)
def test_the_scan_sees_each_construct(line: str) -> None:
    assert any(re.search(pattern, line) for pattern in UNSAFE_JS.values()), line


@pytest.mark.parametrize("path", ["/ui", "/ui/", "/ui/app.js"])
def test_other_methods_get_the_gateways_json_405(client: httpx.Client, path: str) -> None:
    """Not a page, so no page headers (docs/console.md says which answers carry them)."""
    response = client.post(path)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
