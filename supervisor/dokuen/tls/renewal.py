"""Certificates for the apps, the I/O shell: obtain one from the ACME CA (in a worker
thread), install it with a checked nginx reload (the previous one keeps serving when nginx
refuses), and a background task that renews each automatic certificate when it is due,
when the app gains a host, and after a failure with backoff.

A failure is recorded for the app: ``certs APP``, ``status`` and the log show it until a
certificate is obtained."""

import dataclasses
import datetime
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from dokuen.apps.app import App
from dokuen.apps.runtime import Runtime
from dokuen.backup.storage import Storage
from dokuen.errors import DokuenError
from dokuen.events import get_logger
from dokuen.proxy.nginx import Site, SiteTls
from dokuen.settings import Settings
from dokuen.tls import backups
from dokuen.tls.certificates import needs_new, renew_at, retry_delay
from dokuen.tls.keystore import Current, KeyStore, Options

if TYPE_CHECKING:
    from dokuen.tls.acmeclient import Acme

log = get_logger()

LONGEST_SLEEP = 3600.0
EXPIRY_WARNING = datetime.timedelta(days=14)  # `status` warns of a certificate this close
# acmeclient.obtain's shape: (CA, account key, names, put_challenge) -> (chain, key)
Issuer = Callable[
    ["Acme", bytes, list[str], Callable[[str, str], Path]], tuple[bytes, bytes]
]  # look at every certificate at least this often


@dataclass(frozen=True)
class Failure:
    error: str
    since: float
    attempts: int
    next_try: float

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class Certificates:
    """Every app's certificate: installing, obtaining, renewing."""

    def __init__(
        self,
        settings: Callable[[], Settings],
        runtime: Callable[[], Runtime],
        apps: Callable[[], Mapping[str, App]],
        keystore: KeyStore,
        storage: Callable[[], Storage],
        now: Callable[[], float] = time.time,
        issue: "Issuer | None" = None,
    ) -> None:
        """``storage`` is the backup target (blocking); ``issue`` obtains a certificate
        from the CA (blocking; default: acmeclient.obtain)."""
        self.settings = settings
        self.runtime = runtime
        self._apps = apps
        self.keystore = keystore
        self._now = now
        self.storage = storage
        self._issue = issue  # None: acmeclient.obtain, imported on the first order
        self.failures: dict[str, Failure] = {}
        self._lock = anyio.Lock()  # one order at a time: they share the account
        self._installing = anyio.Lock()  # one swap at a time (an order's, a certs:add)
        self._wake = anyio.Event()
        self._known: set[str] = set()  # the apps the task last looked at

    # -- what nginx serves ------------------------------------------------------------

    def decorate(self, site: Site) -> Site:
        """The app's site with its certificate; an automatic app that lacks one for one
        of its hosts (a new domain) wakes the renewal task."""
        if site.app not in self._known:  # a new, renamed or destroyed app: files follow
            self._wake.set()
        try:
            options = self.keystore.options(site.app)
            current = self.keystore.current(site.app)
        except DokuenError as exc:  # broken files under tls/: HTTP serves on
            self.runtime().mux.event(site.app, f"served without HTTPS: {exc}")
            return site
        info = current.info if current else None
        automatic = self.automatic(site.app, options) and site.app not in self.failures
        if automatic and needs_new(info, list(site.hosts), self._utcnow()):
            self._wake.set()
        if current is None:
            return site
        tls = SiteTls(current.cert, current.key, options.redirect, options.hsts, current.info.ocsp)
        return dataclasses.replace(site, tls=tls)

    def automatic(self, app: str, options: Options | None = None) -> bool:
        options = options or self.keystore.options(app)
        if options.auto is not None:
            return options.auto
        settings = self.settings()
        return settings.acme and settings.acme_email is not None

    def _utcnow(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self._now(), datetime.UTC)

    # -- installing ---------------------------------------------------------------------

    async def install(self, app: str, cert_pem: bytes, key_pem: bytes, source: str) -> Current:
        """Serve a checked pair: nginx -t and a reload; if nginx refuses it, the previous
        certificate goes back and keeps serving."""
        self._check_proxied()
        async with self._installing:
            return await self._install(app, cert_pem, key_pem, source)

    def _check_proxied(self) -> None:
        if not self.runtime().proxied:
            raise DokuenError(
                "nginx is off, so nothing would serve HTTPS (set DOKUEN_NGINX=managed)"
            )

    async def _install(self, app: str, cert_pem: bytes, key_pem: bytes, source: str) -> Current:
        runtime = self.runtime()
        previous = self.keystore.current(app)
        current = await anyio.to_thread.run_sync(
            self.keystore.install, app, cert_pem, key_pem, source
        )
        runtime.proxy_changed()
        try:
            await runtime.proxy_sync()
        except DokuenError as exc:
            self.keystore.restore(app, previous)
            runtime.proxy_changed()
            try:
                await runtime.proxy_sync()
            finally:
                self.keystore.prune(app)
            kept = "the previous certificate keeps serving" if previous else "HTTP serves on"
            raise DokuenError(f"{exc}; {kept}") from exc
        await anyio.to_thread.run_sync(self.keystore.prune, app)
        return current

    async def remove(self, app: str) -> None:
        runtime = self.runtime()
        options = self.keystore.options(app)
        self.keystore.set_options(app, dataclasses.replace(options, auto=False, redirect=False))
        self.keystore.remove(app)
        self.failures.pop(app, None)
        runtime.proxy_changed()
        await runtime.proxy_sync()

    # -- obtaining ----------------------------------------------------------------------

    async def obtain(self, name: str, reason: str) -> Current:
        """A certificate from the ACME CA for every host of the app, served at once.
        Raises DokuenError (recorded as the app's failure, with the next try)."""
        self._check_proxied()  # before the CA issues a certificate nothing would serve
        async with self._lock:
            app = self._apps().get(name)
            if app is None:
                raise DokuenError(f"no app {name!r}")
            settings = self.settings()
            hosts = app.hosts()
            # nginx must answer on every host first (a domain just added is a reload away)
            await self.runtime().proxy_sync()
            # acme, requests and cryptography: about 19 MiB, for the first order only
            from dokuen.tls import acmeclient  # noqa: PLC0415

            acme = acmeclient.Acme(
                settings.acme_directory, settings.acme_ca_bundle, settings.acme_email
            )
            mux = self.runtime().mux
            mux.event(name, f"obtaining a certificate for {', '.join(hosts)} ({reason})")
            log.info("tls.obtaining", app=name, hosts=hosts, reason=reason, ca=acme.directory)
            try:
                account_key = await anyio.to_thread.run_sync(self.keystore.account_key)
                written: list[Path] = []

                def put(token: str, content: str) -> Path:
                    written.append(self.keystore.put_challenge(token, content))
                    return written[-1]

                try:
                    chain, key = await anyio.to_thread.run_sync(
                        self._issue or acmeclient.obtain,
                        acme,
                        account_key,
                        hosts,
                        put,
                        abandon_on_cancel=True,
                    )
                finally:
                    for path in written:  # answered or not, the CA is done with them
                        path.unlink(missing_ok=True)
                current = await self.install(name, chain, key, "acme")
            except (DokuenError, OSError) as exc:
                self._failed(name, str(exc))
                raise DokuenError(str(exc)) from exc
            self.failures.pop(name, None)
            info = current.info
            mux.event(
                name,
                f"certificate installed for {', '.join(info.names)}, from {info.issuer}, "
                f"expires {info.not_after:%Y-%m-%d}",
            )
            log.info("tls.installed", app=name, expires=info.not_after.isoformat())
        await self.back_up(name, quiet=True)
        return current

    async def back_up(self, app: str, quiet: bool = False) -> str | None:
        """Store the app's certificate in the backup target (None: there is none). With
        ``quiet``, a failure is logged rather than raised (the certificate still serves)."""
        settings = self.settings()
        if settings.backup_url is None and quiet:
            return None
        mux = self.runtime().mux

        def store() -> str:
            kit = self.keystore.kit(app)
            now = datetime.datetime.fromtimestamp(self._now(), datetime.UTC)
            return backups.store(self.storage(), app, kit, now, settings.home / "tmp")

        try:
            key = await anyio.to_thread.run_sync(store)
        except (DokuenError, OSError) as exc:
            if not quiet:
                raise
            mux.event(app, f"certificate backup FAILED: {exc}")
            log.error("tls.backup_failed", app=app, error=str(exc))
            return None
        mux.event(app, f"certificate backed up: {key}")
        return key

    def _failed(self, name: str, error: str) -> None:
        now = self._now()
        before = self.failures.get(name)
        attempts = before.attempts + 1 if before else 1
        delay = retry_delay(attempts)
        self.failures[name] = Failure(error, before.since if before else now, attempts, now + delay)
        current = self.keystore.current(name)
        keeps = (
            f"; the certificate expiring {current.info.not_after:%Y-%m-%d} keeps serving"
            if current
            else ""
        )
        self.runtime().mux.event(
            name, f"certificate NOT obtained: {error}{keeps}; retrying in {delay:g}s"
        )
        log.error("tls.failed", app=name, error=error, attempts=attempts, retry=delay)

    # -- the background task ------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def apps_changed(self) -> None:
        """Wake the task if the set of apps is not the one it last looked at: the daemon
        says so after every change nginx is told of (an app created, renamed, destroyed)."""
        if set(self._apps()) != self._known:
            self._wake.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            self._wake = anyio.Event()
            sleep = LONGEST_SLEEP
            self._known = set(self._apps())
            for change in await anyio.to_thread.run_sync(self.keystore.reconcile, self._known):
                log.info("tls.reconciled", change=change)
            self.failures = {k: v for k, v in self.failures.items() if k in self._known}
            for name in sorted(self._apps()):
                try:
                    sleep = min(sleep, await self._look_at(name))
                except DokuenError:
                    continue  # recorded, and retried after its delay
                except Exception as exc:
                    log.error("tls.check_failed", app=name, error=str(exc))
            await self._sleep(max(1.0, sleep))

    async def _sleep(self, seconds: float) -> None:
        """Until woken (a certificate to obtain, the set of apps changed) or ``seconds``
        pass: no wakeup in between (an idle daemon's CPU)."""
        with anyio.move_on_after(seconds):
            await self._wake.wait()

    async def _look_at(self, name: str) -> float:
        """Obtain the app's certificate if due; return the seconds until the next look."""
        if not self.automatic(name) or not self.runtime().proxied:
            return LONGEST_SLEEP
        failure = self.failures.get(name)
        if failure is not None and self._now() < failure.next_try:
            return failure.next_try - self._now()
        current = self.keystore.current(name)
        app = self._apps().get(name)
        if app is None:
            return LONGEST_SLEEP
        reason = needs_new(current.info if current else None, app.hosts(), self._utcnow())
        if reason is not None:
            current = await self.obtain(name, reason)
        if current is None:
            return LONGEST_SLEEP
        return (renew_at(current.info) - self._utcnow()).total_seconds()

    def status(self) -> dict[str, Any]:
        """What ``dokuenctl status`` shows."""
        settings = self.settings()
        served = {name: c for name in self._apps() if (c := self._safe_current(name))}
        soon = self._utcnow() + EXPIRY_WARNING
        return {
            "expiring": {
                name: current.info.not_after.isoformat()
                for name, current in sorted(served.items())
                if current.info.not_after <= soon
            },
            "port": settings.https_listen_port,
            "acme": settings.acme_directory,
            "default_auto": settings.acme and settings.acme_email is not None,
            "certificates": len(served),
            "failing": {name: f.error for name, f in sorted(self.failures.items())},
        }

    def _safe_current(self, name: str) -> Current | None:
        try:
            return self.keystore.current(name)
        except DokuenError:
            return None
