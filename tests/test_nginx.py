"""nginx rendering: golden files for every rendered config, each also passed by `nginx -t`
(managed and system mode), the strict grammars that keep anything unchecked out of those
files, and the request ids a real nginx makes of a rendered TLS site over HTTP/2."""

import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from dokuen.errors import InvalidName, SettingsError
from dokuen.names import check_domain
from dokuen.proxy.nginx import (
    Https,
    Managed,
    Site,
    SiteTls,
    check_body_size,
    listen_directive,
    render_https_default,
    render_main,
    render_site,
    render_system_include,
)
from tests.e2e.conftest import free_port_block
from tests.e2e.pebble import MiniCa

GOLDEN = Path(__file__).parent / "golden"
PREFIX = Path("/srv/dokuen/nginx")
NONCE = "3f9a2c1e"  # drawn by the driver for each set of files (sitefiles.py)


def golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME. A missing file is written: read it, then commit it."""
    path = GOLDEN / name
    if not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; delete it to accept the new text"


@pytest.mark.parametrize(
    ("name", "site"),
    [
        ("site-two-web.conf", Site("blog", ("blog.localhost", "blog.example.com"), (5001, 5003))),
        ("site-no-web.conf", Site("shop", ("shop.localhost",), ())),
        ("site-body-size.conf", Site("files", ("files.home.example",), (5010,), "512m")),
    ],
)
def test_site_files(name: str, site: Site) -> None:
    golden(name, render_site(site, "8080", nonce=NONCE))


@pytest.mark.parametrize(
    ("name", "site"),
    [
        (
            "site-router.conf",
            Site("blog", ("blog.localhost",), (5001, 5003), dynos=("web.1", "web.2")),
        ),
        ("site-router-no-web.conf", Site("shop", ("shop.localhost",), ())),
        (
            "site-maintenance.conf",
            Site("blog", ("blog.localhost", "blog.example.com"), (5001,), maintenance=True),
        ),
    ],
)
def test_managed_site_files_log_every_request_to_the_router_access_log(
    name: str, site: Site
) -> None:
    golden(name, render_site(site, "8080", router=True, nonce=NONCE))


def test_maintenance_without_router_lines_for_a_system_nginx() -> None:
    site = Site("blog", ("blog.localhost",), (5001,), maintenance=True)
    text = render_site(site, "80", nonce=NONCE)
    golden("site-maintenance-system.conf", text)
    assert "access_log" not in text
    assert "dokuen-blog" not in text  # no upstream: nothing is proxied in maintenance


HTTPS = Https("127.0.0.1:8443", 8443, Path("/srv/dokuen/acme"))
TLS = SiteTls(Path("/srv/dokuen/tls/blog/ab12.crt"), Path("/srv/dokuen/tls/blog/ab12.key"))


@pytest.mark.parametrize(
    ("name", "site", "https"),
    [
        ("site-https.conf", Site("blog", ("blog.localhost",), (5001,), tls=TLS), HTTPS),
        (
            "site-https-redirect-hsts.conf",
            Site(
                "blog",
                ("blog.example.com",),
                (5001,),
                tls=SiteTls(TLS.cert, TLS.key, redirect=True, hsts=True, stapling=True),
            ),
            Https("443", 443, HTTPS.webroot),
        ),
        ("site-challenges-only.conf", Site("shop", ("shop.example.com",), ()), HTTPS),
    ],
)
def test_https_site_files(name: str, site: Site, https: Https) -> None:
    text = render_site(site, "8080", router=True, https=https, nonce=NONCE)
    golden(name, text)
    # The challenges come before anything else: a redirect, a 503, the app.
    assert text.index("/.well-known/acme-challenge/") < text.index("location / {")
    assert ("ssl_certificate" in text) == (site.tls is not None)


def test_https_default_server_refuses_unknown_names() -> None:
    golden("https-default.conf", render_https_default(HTTPS))


def test_main_file() -> None:
    golden("nginx.conf", render_main(Managed(PREFIX, "127.0.0.1:8080")))


def test_system_include_file() -> None:
    golden("dokuen-http.conf", render_system_include(Managed(PREFIX, "80")))


def nginx_t(prefix: Path, config: Path) -> None:
    result = subprocess.run(
        ["nginx", "-t", "-q", "-p", str(prefix), "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_everything_rendered(tmp_path: Path) -> None:
    """No app yet; then an app serving, one idle, one in maintenance, one with TLS and
    HTTP/2, one without router lines: each app's own log format, all to one file."""
    managed = Managed(tmp_path, "127.0.0.1:8080")
    for directory in ("apps", "logs", "temp", "router"):  # the router's: dokuend makes it
        (tmp_path / directory).mkdir()
    managed.config.write_text(render_main(managed))
    nginx_t(tmp_path, managed.config)
    issued = MiniCa().issue(["tls.example.com"])
    (tmp_path / "tls.crt").write_bytes(issued.cert)
    (tmp_path / "tls.key").write_bytes(issued.key)
    tls = SiteTls(tmp_path / "tls.crt", tmp_path / "tls.key", redirect=True, hsts=True)
    https = Https("127.0.0.1:8443", 8443, tmp_path / "acme")
    (managed.sites / "00-https-default.conf").write_text(render_https_default(https))
    sites = [
        Site("tls", ("tls.example.com",), (5020,), tls=tls),
        Site("blog", ("blog.localhost", "blog.example.com"), (5001, 5003)),
        Site("shop", ("shop.localhost",), ()),
        Site("files", ("files.home.example",), (5010,), "512m"),
        Site("down", ("down.localhost",), (5011,), maintenance=True),
    ]
    for site in sites:
        router = site.app != "files"
        text = render_site(site, managed.listen, router=router, https=https, nonce=NONCE)
        (managed.sites / f"{site.app}.conf").write_text(text)
    nginx_t(tmp_path, managed.config)


def system_nginx(tmp_path: Path) -> tuple[Managed, Path]:
    """dokuen's files for a system nginx, and a system nginx.conf whose http block
    includes dokuen-http.conf."""
    managed = Managed(tmp_path / "dokuen", "127.0.0.1:8080")
    managed.sites.mkdir(parents=True)
    include = managed.prefix / "dokuen-http.conf"
    include.write_text(render_system_include(managed))
    system = tmp_path / "system.conf"
    system.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n    proxy_temp_path {tmp_path}/t;\n    include {include};\n}}\n"
    )
    return managed, system


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_a_system_nginx_accepts_the_include_and_the_app_files(tmp_path: Path) -> None:
    """System mode: the system's http block includes dokuen-http.conf, which includes the
    app files (no router lines: no log format, no access log of dokuend's)."""
    managed, system = system_nginx(tmp_path)
    nginx_t(tmp_path, system)
    for site in (
        Site("blog", ("blog.localhost",), (5001,)),
        Site("shop", ("shop.localhost",), ()),
        Site("down", ("down.localhost",), (5011,), maintenance=True),
    ):
        text = render_site(site, managed.listen, nonce=NONCE)
        assert "log_format" not in text
        assert "access_log" not in text
        (managed.sites / f"{site.app}.conf").write_text(text)
    nginx_t(tmp_path, system)


@pytest.mark.parametrize(
    "name",
    [
        "blog.example.com",
        "localhost",
        "a.b",
        "1password.example",
        "x" * 63 + ".com",
        "a." * 126 + "b",
    ],
)
def test_good_domains(name: str) -> None:
    assert check_domain(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "blog example.com",
        "blog.example.com;",
        "blog.example.com{",
        "}",
        "blog.example.com\n",
        "*.example.com",
        "Blog.example.com",
        "-blog.example.com",
        "blog-.example.com",
        "blog..example.com",
        ".example.com",
        "example.com.",
        "x" * 64 + ".com",
        "a." * 126 + "bc",  # 254 characters
        "",
        "blog.example.com$host",
        "bl\u00f6g.example.com",
    ],
)
def test_bad_domains_are_refused_not_escaped(name: str) -> None:
    with pytest.raises(InvalidName, match="invalid domain"):
        check_domain(name)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("10m", True),
        ("512k", True),
        ("1G", True),
        ("0", True),
        ("10 m", False),
        ("10m;", False),
        ("-1", False),
        ("", False),
    ],
)
def test_body_sizes(text: str, ok: bool) -> None:
    if ok:
        assert check_body_size(text) == text
    else:
        with pytest.raises(SettingsError, match="DOKUEN_CLIENT_MAX_BODY_SIZE"):
            check_body_size(text)


@pytest.mark.parametrize(
    ("address", "expected"),
    [(None, "8080"), ("127.0.0.1", "127.0.0.1:8080"), ("::1", "[::1]:8080")],
)
def test_listen_directive(address: str | None, expected: str) -> None:
    assert listen_directive(address, 8080) == expected


def test_listen_refuses_a_host_name() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        listen_directive("localhost; evil", 8080)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_takes_the_longest_names_and_many_of_them(tmp_path: Path) -> None:
    """Every name domains:add takes fits the server-name hash: a 253-character one, and
    20,000 names over a few apps (nginx -t refusing one app's names refuses every app)."""
    managed = Managed(tmp_path, "127.0.0.1:8080")
    for directory in ("apps", "logs", "temp", "router"):  # the router's: dokuend makes it
        (tmp_path / directory).mkdir()
    managed.config.write_text(render_main(managed))
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    for number in range(4):
        names = tuple(f"host-{number}-{i}.example.com" for i in range(5000))
        site = Site(f"app{number}", (longest[: 253 - number], *names), (5001,))
        text = render_site(site, managed.listen, nonce=NONCE)
        (managed.sites / f"app{number}.conf").write_text(text)
    nginx_t(tmp_path, managed.config)


@pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("curl") is None, reason="needs nginx and curl"
)
def test_request_ids_count_http2_streams_and_are_the_router_line_s(tmp_path: Path) -> None:
    """A TLS site on HTTP/2 as dokuend renders it, a real nginx, three requests on one
    connection (curl reuses it), each with a forged X-Request-Id: the upstream gets
    NONCE-PID-CONNECTION-1, -2 and -3, and the router lines say the same ids."""
    http = free_port_block(3)[0]
    https_port, upstream = http + 1, http + 2
    for directory in ("apps", "logs", "temp", "router"):
        (tmp_path / directory).mkdir()
    https = Https(f"127.0.0.1:{https_port}", https_port, tmp_path / "acme")
    managed = Managed(tmp_path, f"127.0.0.1:{http}", https=https)
    managed.config.write_text(render_main(managed))
    issued = MiniCa().issue(["tls.example.com"])
    (tmp_path / "tls.crt").write_bytes(issued.cert)
    (tmp_path / "tls.key").write_bytes(issued.key)
    site = Site(
        "tls",
        ("tls.example.com",),
        (upstream,),
        tls=SiteTls(tmp_path / "tls.crt", tmp_path / "tls.key"),
    )
    text = render_site(site, managed.listen, router=True, https=https, nonce=NONCE)
    (managed.sites / "tls.conf").write_text(text)
    (managed.sites / "00-https-default.conf").write_text(render_https_default(https))
    (managed.sites / "echo.conf").write_text(  # the app: answers with the id it was given
        f'server {{ listen 127.0.0.1:{upstream}; return 200 "$http_x_request_id\\n"; }}\n'
    )
    nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(managed.config)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", https_port), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.05)
        base = f"https://tls.example.com:{https_port}"
        result = subprocess.run(
            ["curl", "-sSk", "--http2", "--resolve", f"tls.example.com:{https_port}:127.0.0.1"]
            + ["-H", "X-Request-Id: forged", "-w", "%{http_version}\\n"]
            + [f"{base}/{n}" for n in (1, 2, 3)],
            capture_output=True,
            text=True,
            check=True,
            timeout=20,
        )
        words = result.stdout.split()
        assert words[1::2] == ["2", "2", "2"], result.stdout  # HTTP/2, all three
        ids = words[0::2]
        parts = [re.fullmatch(r"3f9a2c1e-([0-9]+)-([0-9]+)-([0-9]+)", i) for i in ids]
        assert all(parts), ids
        assert len({(m[1], m[2]) for m in parts if m}) == 1  # one worker, one connection
        assert [m[3] for m in parts if m] == ["1", "2", "3"]  # its streams, counted
        access_log = tmp_path / "router" / "access.log"
        while len(lines := access_log.read_text().splitlines()) < 3:  # flush=100ms
            assert time.monotonic() < deadline + 10, lines
            time.sleep(0.05)
        assert [line.split(" ")[4] for line in lines] == ids
        assert all(line.startswith("tls serving 200 GET ") for line in lines)
        assert "forged" not in access_log.read_text()
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(20)
