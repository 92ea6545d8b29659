"""The router access log attacked under a real dokuend and its real nginx: a user's
logrotate with copytruncate, and root putting a link, a FIFO or a directory at the file's
name. The apps answer all along, nginx never writes through the link nor blocks on the
FIFO (it is reloaded after each), the daemon says what happened, and every request's line
is shown once."""

import ctypes
import json
import os
import shutil
from pathlib import Path

from tests.e2e.conftest import Dokuen, wait_for, write_app
from tests.e2e.test_nginx import (
    WEB,
    env_via,
    get,
    http_port,
    proxied,  # noqa: F401 (a fixture)
    pytestmark,  # noqa: F401 (skipped without nginx)
)
from tests.e2e.test_router import paths_shown


def exchange(one: Path, other: Path) -> None:
    """Swap two names at once (renameat2 RENAME_EXCHANGE): no moment without either."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_cwd, rename_exchange = -100, 2
    if libc.renameat2(at_cwd, bytes(one), at_cwd, bytes(other), rename_exchange) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def requests(daemon: Dokuen, prefix: str, count: int = 20) -> None:
    """``count`` requests through nginx, every one answered; then every line shown once."""
    port = http_port(daemon)
    for n in range(count):
        assert get(port, "blog.localhost", f"{prefix}/{n}")[0] == 200
    want = sorted(f"{prefix}/{n}" for n in range(count))
    wait_for(lambda: sorted(paths_shown(daemon, prefix)) == want or None, f"{prefix}'s lines")


def test_a_truncated_or_replaced_router_log_is_taken_back_and_never_followed(
    proxied: Dokuen,  # noqa: F811
    apps_dir: Path,
    tmp_path: Path,
) -> None:
    port = http_port(proxied)
    proxied.deploy("blog", write_app(apps_dir / "blog", WEB))
    wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
    path = proxied.home / "nginx" / "router" / "access.log"
    requests(proxied, "/before")
    shutil.copyfile(path, tmp_path / "access.log.1")  # logrotate's copytruncate
    os.truncate(path, 0)
    requests(proxied, "/truncated")
    target = tmp_path / "target"
    target.write_text("precious\n")
    planted = path.with_name("planted")
    kinds = ("a symbolic link", "a FIFO", "a directory")
    for reloads, kind in enumerate(kinds, start=1):
        if kind == "a symbolic link":
            planted.symlink_to(target)
        elif kind == "a FIFO":
            os.mkfifo(planted)
        else:  # a directory cannot replace a file in one rename: they swap places
            planted.mkdir()
            exchange(planted, path)
        if kind != "a directory":
            os.rename(planted, path)
        said = f"access.log was replaced by {kind}: reading a new file in its place"
        wait_for(lambda: said in proxied.log() or None, f"{kind} noticed")  # noqa: B023
        assert path.is_file()
        assert not path.is_symlink()
        # nginx reloaded by a change of the apps' too: it opens the name again
        proxied.ctl("domains:add", "blog", f"blog{reloads}.example.test")
        host = f"blog{reloads}.example.test"
        wait_for(lambda: env_via(port, host), "the new domain")  # noqa: B023
        requests(proxied, f"/after-{kind.split()[-1]}")
    assert target.read_text() == "precious\n"
    assert [p.name for p in path.parent.iterdir() if p.name.startswith("access.log.moved")] == []
    router = json.loads(proxied.ctl("status", "--json").stdout)["nginx"]["router"]
    assert router["problem"] is None
    assert router["unparsed"] == 0
    assert proxied.process is not None
    assert proxied.process.poll() is None
