"""The ``certs*`` requests: an app's certificate shown, added by hand, removed, obtained
from the ACME CA (``certs:auto``), renewed now (``certs:renew``), and the redirect to HTTPS
and HSTS turned on or off."""

import dataclasses
import datetime
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from dokuen.apps.app import App
from dokuen.apps.runtime import Runtime
from dokuen.backup.requests import BackupCommands
from dokuen.control import Command, Output, optional_arg, text_arg
from dokuen.errors import DokuenError, InvalidName
from dokuen.settings import Settings
from dokuen.tls import backups
from dokuen.tls.certificates import (
    CertificateError,
    check_pair,
    check_usable,
    renew_at,
    served_hosts,
)
from dokuen.tls.keystore import Current, KeyStore, Options
from dokuen.tls.renewal import Certificates

MAX_PEM = 1 << 20


class Host(Protocol):
    """What the certificates need of the daemon (read anew each time: SIGHUP replaces
    the settings and the runtime)."""

    settings: Settings
    runtime: Runtime
    apps: dict[str, App]
    backups: BackupCommands


class CertCommands:
    def __init__(self, host: Host, find: Callable[[dict[str, Any]], App]) -> None:
        keystore = KeyStore(host.settings.home)
        self.certs = Certificates(
            lambda: host.settings,
            lambda: host.runtime,
            lambda: host.apps,
            keystore,
            host.backups.storage,
        )
        self._find = find

    def handlers(self) -> dict[str, Command]:
        return {
            "certs": self.show,
            "certs:add": self.add,
            "certs:remove": self.remove,
            "certs:auto": self.auto,
            "certs:renew": self.renew,
            "certs:redirect": self.redirect,
            "certs:hsts": self.hsts,
            "certs:backup": self.backup,
            "certs:restore": self.restore,
        }

    def info(self, app: App) -> dict[str, Any]:
        store = self.certs.keystore
        current = store.current(app.name)
        options = store.options(app.name)
        failure = self.certs.failures.get(app.name)
        return {
            "app": app.name,
            "hosts": app.hosts(),
            "auto": self.certs.automatic(app.name, options),
            "redirect": options.redirect,
            "hsts": options.hsts,
            "certificate": current
            and {
                **current.info.as_dict(),
                "source": current.source,
                "renew_at": renew_at(current.info).isoformat(),
            },
            "failing": failure and failure.as_dict(),
        }

    async def show(self, args: dict[str, Any], out: Output) -> Any:
        return self.info(self._find(args))

    async def add(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find(args)
        cert, key = _pem(args, "cert"), _pem(args, "key")
        try:
            info = check_pair(cert, key)
            check_usable(info, app.hosts(), datetime.datetime.now(datetime.UTC))
        except CertificateError as exc:
            raise CertificateError(f"certificate refused for {app.name}: {exc}") from None
        store = self.certs.keystore
        store.set_options(app.name, dataclasses.replace(store.options(app.name), auto=False))
        self.certs.failures.pop(app.name, None)
        await self.certs.install(app.name, cert, key, "manual")
        await self.certs.back_up(app.name, quiet=True)
        return self.info(app)

    async def backup(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find(args)
        return {"key": await self.certs.back_up(app.name)}

    async def restore(self, args: dict[str, Any], out: Output) -> Any:
        """The app's certificate from the backup target (``id``, default the newest),
        served at once; the account key comes too when this home has none."""
        app = self._find(args)
        wanted = optional_arg(args, "id")
        settings = self.certs.settings()
        storage = self.certs.storage
        scratch = settings.home / "tmp"
        backup, kit = await anyio.to_thread.run_sync(
            lambda: backups.fetch(storage(), app.name, wanted, scratch)
        )
        label = f"certificate backup {backup}"
        warnings = self._check(app, kit, label, expired_ok=False)
        await self._put_back(app, kit)
        return {**self.info(app), "restored": backup, "warnings": warnings}

    # -- inside database backups (backup/databases.py calls these) ----------------------

    async def kit_of(self, app: App) -> bytes | None:
        """What a database backup of the app carries of HTTPS (``tls/backups.py``'s kit),
        or None when the app has no certificate."""
        store = self.certs.keystore
        if store.current(app.name) is None:
            return None
        return backups.encode(await anyio.to_thread.run_sync(store.kit, app.name))

    async def back_up(self, app: str, quiet: bool = False) -> str | None:
        return await self.certs.back_up(app, quiet)

    def check_kit(self, app: App, data: bytes, label: str) -> list[str]:
        """Check a kit before a restore changes anything. Raises DokuenError when it is
        damaged or its certificate is unusable (not PEM, not its key's); returns warnings."""
        return self._check(app, backups.decode(data, label), label, expired_ok=True)

    async def restore_kit(self, app: App, data: bytes, label: str) -> list[str]:
        """Serve the kit's certificate at once (a checked reload), with its options;
        an expired one is left out. Returns warnings."""
        kit = backups.decode(data, label)
        warnings = self._check(app, kit, label, expired_ok=True)
        info = check_pair(kit.cert.encode(), kit.key.encode())
        if datetime.datetime.now(datetime.UTC) >= info.not_after:
            return [f"{warning}; it was not put back" for warning in warnings]
        current = await self._put_back(app, kit)
        self.certs.runtime().mux.event(
            app.name,
            f"{label} serves again: {', '.join(current.info.names)}, expires "
            f"{current.info.not_after:%Y-%m-%d}",
        )
        return warnings

    def _check(self, app: App, kit: backups.Kit, label: str, *, expired_ok: bool) -> list[str]:
        """Refuse (CertificateError) a pair that is not one; a certificate naming none of
        the app's hosts (and, with ``expired_ok``, one out of its dates) is a warning."""
        try:
            info = check_pair(kit.cert.encode(), kit.key.encode())
        except CertificateError as exc:
            raise CertificateError(
                f"{label} refused: {exc}; the certificate that serves is unchanged"
            ) from None
        warnings = []
        if not served_hosts(info, app.hosts()):
            warnings.append(
                f"{label} names {', '.join(info.names) or 'no host'}, none of {app.name}'s "
                f"hosts ({', '.join(app.hosts())}): browsers will refuse it until a "
                "certificate for them is added (certs:add, certs:auto)"
            )
        try:
            check_usable(info, served_hosts(info, app.hosts()) or list(info.names), _now())
        except CertificateError as exc:
            if not expired_ok:
                raise CertificateError(f"{label} refused: {exc}") from None
            warnings.append(f"{label}: {exc}")
        return warnings

    async def _put_back(self, app: App, kit: backups.Kit) -> Current:
        store = self.certs.keystore
        store.adopt_account(kit)
        auto = kit.options.get("auto")
        options = Options(
            auto=auto if isinstance(auto, bool) else None,
            redirect=kit.options.get("redirect") is True,
            hsts=kit.options.get("hsts") is True,
        )
        store.set_options(app.name, options)
        self.certs.failures.pop(app.name, None)
        return await self.certs.install(app.name, kit.cert.encode(), kit.key.encode(), kit.source)

    async def remove(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find(args)
        if self.certs.keystore.current(app.name) is None:
            raise DokuenError(f"{app.name} has no certificate")
        await self.certs.remove(app.name)
        return self.info(app)

    async def auto(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find(args)
        on = _switch(args)
        store = self.certs.keystore
        store.set_options(app.name, dataclasses.replace(store.options(app.name), auto=on))
        if on:
            current = store.current(app.name)
            if current is None or current.source != "acme":
                await self.certs.obtain(app.name, "certs:auto")
            else:
                self.certs.wake()
        return self.info(app)

    async def renew(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find(args)
        if not self.certs.automatic(app.name):
            raise DokuenError(
                f"{app.name}'s certificate is not from the ACME CA; turn that on first: "
                f"dokuenctl certs:auto {app.name}"
            )
        await self.certs.obtain(app.name, "certs:renew")
        return self.info(app)

    async def redirect(self, args: dict[str, Any], out: Output) -> Any:
        return await self._option(args, "redirect")

    async def hsts(self, args: dict[str, Any], out: Output) -> Any:
        return await self._option(args, "hsts")

    async def _option(self, args: dict[str, Any], option: str) -> Any:
        app = self._find(args)
        on = _switch(args)
        store = self.certs.keystore
        if on and store.current(app.name) is None:
            raise DokuenError(
                f"{app.name} has no certificate yet (certs:auto {app.name}, or certs:add)"
            )
        store.set_options(app.name, dataclasses.replace(store.options(app.name), **{option: on}))
        runtime = self.certs.runtime()
        runtime.proxy_changed()
        await runtime.proxy_sync()
        return self.info(app)


def _pem(args: dict[str, Any], key: str) -> bytes:
    text = text_arg(args, key)
    if len(text) > MAX_PEM:
        raise CertificateError(f"the {key} file is over {MAX_PEM} bytes: not a PEM file")
    return text.encode()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _switch(args: dict[str, Any]) -> bool:
    value = args.get("on", True)
    if not isinstance(value, bool):
        raise InvalidName("on must be true or false")
    return value
