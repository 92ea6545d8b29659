"""The renewal task's decisions against fakes: a fake CA (the issuer), a fake clock, a
fake nginx; the real key store in a temporary home."""

import datetime
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest

from dokuen.apps.app import App
from dokuen.apps.runtime import Runtime
from dokuen.backup.storage import Storage
from dokuen.proxy.nginx import Site
from dokuen.settings import Settings
from dokuen.tls.acmeclient import Acme, AcmeError
from dokuen.tls.keystore import KeyStore, Options
from dokuen.tls.renewal import Certificates
from tests.e2e.pebble import NOW, MiniCa

pytestmark = pytest.mark.anyio
CA = MiniCa("Fake ACME CA")
DAY = 86400.0


class FakeCa:
    def __init__(self) -> None:
        self.orders: list[list[str]] = []
        self.down = False

    def __call__(
        self, acme: Acme, account: bytes, names: list[str], put: Callable[[str, str], Path]
    ) -> tuple[bytes, bytes]:
        self.orders.append(names)
        if self.down:
            raise AcmeError("cannot reach the ACME CA at https://ca.test/dir (connection refused)")
        put("token-1", "token-1.thumbprint")  # the challenge file nginx would serve
        issued = CA.issue(names, start=datetime.datetime.fromtimestamp(clock[0], datetime.UTC))
        return issued.cert, issued.key


clock = [NOW.timestamp()]


def make(tmp_path: Path, hosts: list[str]) -> tuple[Certificates, FakeCa, list[str]]:
    clock[0] = NOW.timestamp()
    events: list[str] = []
    mux = SimpleNamespace(event=lambda app, message: events.append(f"{app}: {message}"))
    runtime = SimpleNamespace(
        proxied=True, proxy_changed=lambda: None, proxy_sync=anyio.lowlevel.checkpoint, mux=mux
    )
    settings = Settings(tmp_path, tmp_path / "s", acme=True, acme_email="ops@example.com")
    app = SimpleNamespace(hosts=lambda: list(hosts))
    ca = FakeCa()
    certs = Certificates(
        lambda: settings,
        lambda: cast(Runtime, runtime),
        lambda: cast(dict[str, App], {"blog": app}),
        KeyStore(tmp_path),
        lambda: cast(Storage, None),
        now=lambda: clock[0],
        issue=ca,
    )
    return certs, ca, events


async def test_obtained_when_missing_then_renewed_when_due(tmp_path: Path) -> None:
    certs, ca, events = make(tmp_path, ["blog.example.com"])
    wait = await certs._look_at("blog")
    assert ca.orders == [["blog.example.com"]]
    assert 59 * DAY < wait <= 60 * DAY  # a 90-day certificate: renewed 30 days before
    assert await certs._look_at("blog") == pytest.approx(wait)
    assert len(ca.orders) == 1  # nothing due: nothing ordered
    first = certs.keystore.current("blog")
    assert first is not None
    assert first.source == "acme"
    assert not (tmp_path / "acme/.well-known/acme-challenge/token-1").exists()  # cleaned
    clock[0] += wait
    await certs._look_at("blog")
    assert len(ca.orders) == 2
    second = certs.keystore.current("blog")
    assert second is not None
    assert second.info.fingerprint != first.info.fingerprint
    assert not first.key.exists()  # the old key is gone once nginx serves the new one
    assert any("obtaining a certificate for blog.example.com (expires on" in e for e in events)


async def test_a_failing_ca_backs_off_and_the_old_certificate_stays(tmp_path: Path) -> None:
    certs, ca, events = make(tmp_path, ["blog.example.com"])
    await certs._look_at("blog")
    served = certs.keystore.current("blog")
    ca.down = True
    with pytest.raises(Exception, match="cannot reach the ACME CA"):
        await certs.obtain("blog", "certs:renew")
    failure = certs.failures["blog"]
    assert (failure.attempts, failure.next_try - clock[0]) == (1, 60)
    assert certs.keystore.current("blog") == served
    assert "keeps serving; retrying in 60s" in events[-1]
    clock[0] += 59
    assert await certs._look_at("blog") == pytest.approx(1)  # still waiting: no order
    assert len(ca.orders) == 2
    clock[0] += 1
    await certs._look_at("blog")  # not due yet, so nothing to order despite the failure
    clock[0] += 61 * DAY
    with pytest.raises(Exception, match="cannot reach"):
        await certs._look_at("blog")  # due and failing again: the delay doubles
    assert certs.failures["blog"].attempts == 2
    assert certs.failures["blog"].next_try - clock[0] == 120
    status = certs.status()
    assert status["failing"] == {
        "blog": "cannot reach the ACME CA at https://ca.test/dir (connection refused)"
    }
    assert list(status["expiring"]) == []  # 30 days left: not yet warned of
    clock[0] += 17 * DAY
    assert list(certs.status()["expiring"]) == ["blog"]  # 13 days left
    ca.down = False
    clock[0] += 120
    await certs._look_at("blog")
    assert "blog" not in certs.failures
    assert certs.status()["failing"] == {}
    assert certs.status()["expiring"] == {}


async def test_a_new_host_wakes_the_task_and_nginx_gets_the_options(tmp_path: Path) -> None:
    hosts = ["blog.example.com"]
    certs, ca, _ = make(tmp_path, hosts)
    await certs._look_at("blog")
    certs.keystore.set_options("blog", Options(auto=None, redirect=True, hsts=True))
    certs._known = {"blog"}  # as after the task looked at every app: no news
    site = certs.decorate(Site("blog", tuple(hosts), (5001,)))
    assert site.tls is not None
    assert site.tls.redirect
    assert site.tls.hsts
    assert not certs._wake.is_set()
    hosts.append("www.example.com")
    certs.decorate(Site("blog", tuple(hosts), (5001,)))
    assert certs._wake.is_set()
    await certs._look_at("blog")
    assert ca.orders[-1] == ["blog.example.com", "www.example.com"]


async def test_an_app_with_auto_off_is_left_alone(tmp_path: Path) -> None:
    certs, ca, _ = make(tmp_path, ["blog.example.com"])
    certs.keystore.set_options("blog", Options(auto=False))
    await certs._look_at("blog")
    assert ca.orders == []
    info: dict[str, Any] = certs.status()
    assert info["certificates"] == 0


async def test_files_follow_a_rename_and_go_with_a_destroyed_app(tmp_path: Path) -> None:
    (tmp_path / "apps/blog").mkdir(parents=True)
    certs, _, _ = make(tmp_path, ["blog.example.com"])
    await certs._look_at("blog")
    served = certs.keystore.current("blog")
    store = certs.keystore
    (tmp_path / "apps/blog").rename(tmp_path / "apps/notes")  # apps:rename: one rename
    assert store.reconcile({"notes"}) == ["blog renamed to notes: its certificate follows"]
    moved = store.current("notes")
    assert moved is not None
    assert served is not None
    assert moved.info == served.info
    assert moved.cert.parent == tmp_path / "tls/notes"
    shutil.rmtree(tmp_path / "apps/notes")  # apps:destroy, then apps:create of the name
    (tmp_path / "apps/notes").mkdir()
    assert store.reconcile({"notes"}) == ["certificate files of notes removed (the app is gone)"]
    assert store.current("notes") is None
    assert store.app_names() == set()


async def test_a_changed_set_of_apps_wakes_the_sleeping_task_and_nothing_else_does(
    tmp_path: Path,
) -> None:
    """The task sleeps with no wakeup in between (an idle daemon's CPU): the daemon's word
    after an app is created, renamed or destroyed wakes it, at once, only when the set of
    apps it last looked at changed."""
    apps: dict[str, Any] = {"blog": SimpleNamespace(hosts=lambda: ["blog.example.com"])}
    certs, _, _ = make(tmp_path, [])
    certs._apps = lambda: cast(dict[str, App], apps)
    certs._known = {"blog"}
    woke: list[float] = []

    async def sleeper() -> None:
        await certs._sleep(3600)
        woke.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await anyio.sleep(0.05)
        certs.apps_changed()  # the same apps: nothing to look at again
        await anyio.sleep(0.05)
        assert woke == []
        apps["notes"] = apps.pop("blog")  # apps:rename
        certs.apps_changed()
        with anyio.fail_after(5):
            while not woke:
                await anyio.sleep(0.01)
