"""The app files on disk (proxy/sitefiles.py), checked by a real ``nginx -t``: each write
has a new nonce in every file; a write nginx refuses leaves the live files, what the
driver knows of them and the nonce as they were, in managed and in system mode."""

import re
import shutil
from pathlib import Path

import pytest

from dokuen.errors import DokuenError
from dokuen.proxy.nginx import Managed, Site, render_main, render_system_include
from dokuen.proxy.sitefiles import SiteFiles
from dokuen.supervise.spawn import OsSpawner
from tests.e2e.test_nginx import refusing_nginx
from tests.test_nginx import system_nginx

NGINX = shutil.which("nginx")
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed"),
]
BLOG = Site("blog", ("blog.localhost",), (5001,))
SHOP = Site("shop", ("shop.localhost",), ())
ID = re.compile(r"([0-9a-f]{8})-\$pid-\$connection-\$connection_requests")


def nonces(sites: Path) -> set[str]:
    return {n for path in sites.glob("*.conf") for n in ID.findall(path.read_text())}


def managed_prefix(tmp_path: Path) -> Managed:
    managed = Managed(tmp_path / "nginx", "127.0.0.1:8080")
    for directory in ("apps", "logs", "temp", "router"):
        (managed.prefix / directory).mkdir(parents=True)
    managed.config.write_text(render_main(managed))
    return managed


async def test_every_write_has_a_new_nonce_and_a_refused_one_changes_nothing(
    tmp_path: Path,
) -> None:
    managed = managed_prefix(tmp_path)
    binary, refuse = refusing_nginx(tmp_path)
    files = SiteFiles(managed, binary, OsSpawner(), router=True, system=False)
    assert not files.unloaded  # files a past dokuend left may have been loaded
    first = files.nonce
    assert files.render({"blog": BLOG}) == files.render({"blog": BLOG})  # the same nonce
    texts = await files.write({"blog": BLOG, "shop": SHOP})
    assert files.unloaded
    assert files.nonce != first
    assert nonces(managed.sites) == {files.nonce}
    assert texts == files.live == files.render(files.shown)  # a no-op is seen as one
    written = {p.name: p.read_text() for p in managed.sites.iterdir()}
    assert set(written) == {"blog.conf", "shop.conf"}
    kept = files.nonce
    refuse.touch()
    files.unloaded = False
    with pytest.raises(DokuenError, match=r"nginx -t refused the new config: .*refused"):
        await files.write({"blog": BLOG})
    assert files.nonce == kept
    assert files.live == texts
    assert not files.unloaded
    assert {p.name: p.read_text() for p in managed.sites.iterdir()} == written
    assert not (managed.prefix / "apps.old").exists()


async def test_system_mode_puts_the_old_files_back_when_the_system_refuses(
    tmp_path: Path,
) -> None:
    managed, system = system_nginx(tmp_path)
    wrapper = tmp_path / "system-nginx"
    wrapper.write_text(f'#!/bin/sh\nexec {NGINX} -p {tmp_path} -c {system} "$@"\n')
    wrapper.chmod(0o755)
    files = SiteFiles(managed, str(wrapper), OsSpawner(), router=False, system=True)
    await files.write({"blog": BLOG})
    before = (managed.sites / "blog.conf").read_text()
    assert nonces(managed.sites) == {files.nonce}
    assert "access_log" not in before
    # Something of the system's own that the new files clash with: a second upstream
    # of the name blog's file declares.
    clash = managed.prefix / "clash.conf"
    clash.write_text("upstream dokuen-blog { server 127.0.0.1:1; }\n")
    include = managed.prefix / "dokuen-http.conf"
    include.write_text(render_system_include(managed) + f"include {clash};\n")
    kept = files.nonce
    with pytest.raises(DokuenError, match="nginx -t refused the new config"):
        await files.write({"blog": BLOG, "shop": SHOP})
    assert files.nonce == kept
    assert sorted(p.name for p in managed.sites.iterdir()) == ["blog.conf"]
    assert (managed.sites / "blog.conf").read_text() == before
