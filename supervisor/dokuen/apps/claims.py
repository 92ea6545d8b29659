"""Which app a host belongs to, decided one claim at a time: an app's own host
``NAME.DOKUEN_DOMAIN`` and the domains added to apps are each one app's. Every check here
is synchronous, so a check and the write that follows it (with no await between) cannot
interleave with another claim."""

import contextlib
from collections.abc import Callable, Iterator, Mapping

from dokuen.apps.app import App
from dokuen.errors import Conflict


class Claims:
    def __init__(self, domain: Callable[[], str]) -> None:
        self._domain = domain  # DOKUEN_DOMAIN as it is now (SIGHUP may change it)
        self._arriving: set[str] = set()  # apps being created, or renamed to, right now

    def host_of(self, name: str) -> str:
        return f"{name}.{self._domain()}"

    def check_new_app(self, name: str, apps: Mapping[str, App], renamed: str | None = None) -> None:
        """App ``name``'s host is no other app's domain: that app would keep serving (and
        could hold a certificate for) the new app's own host."""
        host = self.host_of(name)
        for other in apps.values():
            if other.name != renamed and host in other.dir.read_domains():
                raise Conflict(
                    f"{host}, the host of app {name!r}, is a domain of app {other.name!r}; "
                    f"free it first: dokuenctl domains:remove {other.name} {host}"
                )

    @contextlib.contextmanager
    def arriving(self, name: str) -> Iterator[None]:
        """While app ``name`` is being made (or renamed to), its host is claimed: a
        domains:add of it is refused although no app has that name yet."""
        self._arriving.add(name)
        try:
            yield
        finally:
            self._arriving.discard(name)

    def check_domain(self, domain: str, apps: Mapping[str, App]) -> None:
        """``domain`` is free to add: no app's, nor the host of an app arriving now."""
        for other in apps.values():
            if domain in other.hosts():
                raise Conflict(f"domain {domain!r} already belongs to app {other.name!r}")
        if any(domain == self.host_of(name) for name in self._arriving):
            raise Conflict(f"domain {domain!r} is the host of an app being created now")
