"""The app files nginx includes, on disk, and the nonce their request ids start with.

Each change is written whole to a staging directory next to the live one and swapped in
only once ``nginx -t`` accepts it (managed mode: the whole tree is checked before anything
changes), or swapped in first and put back when the system's ``nginx -t`` refuses it
(system mode: the system's nginx reads the live directory).

The nonce (router.request_id) tells apart the request ids of two nginx cycles whose
workers got the same pids: every cycle starts its connection counter at 1 again. So files
that change are written with a new nonce, and a master of dokuend's own that is about to
start on files some nginx may have loaded gets them again with a new one (``unloaded``).
"""

import dataclasses
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from dokuen.errors import DokuenError
from dokuen.proxy.nginx import Managed, Site, render_https_default, render_main, render_site
from dokuen.supervise.spawn import OsSpawner

STAGING = "apps.new"
OLD = "apps.old"
HTTPS_DEFAULT = "00-https-default"  # a file name no app has (app names start with a letter)


class SiteFiles:
    """What the app files say (``live``), what they were rendered from (``shown``), their
    nonce, and whether no nginx may have loaded them yet (``unloaded``: at first, whatever
    files a past dokuend left may have been)."""

    def __init__(
        self, managed: Managed, binary: str, spawner: OsSpawner, router: bool, system: bool
    ) -> None:
        self.managed = managed
        self.binary = binary
        self.router = router  # every request logged to the router access log
        self.system = system
        self._spawner = spawner
        self.live: dict[str, str] = {}
        self.shown: dict[str, Site] = {}
        self.nonce = new_nonce()
        self.unloaded = False

    def render(self, shown: Mapping[str, Site]) -> dict[str, str]:
        """The files' texts (file name without ``.conf`` to text) with the current nonce."""
        https = self.managed.https
        texts = {
            app: render_site(site, self.managed.listen, self.router, https, nonce=self.nonce)
            for app, site in shown.items()
        }
        # A system nginx has a default server of its own on 443: only ours gets this one.
        if https is not None and not self.system and any(s.tls for s in shown.values()):
            texts[HTTPS_DEFAULT] = render_https_default(https)
        return texts

    async def write(self, shown: Mapping[str, Site]) -> dict[str, str]:
        """Make the files those of ``shown``, with a new nonce; their texts.

        Raises DokuenError when ``nginx -t`` refuses them (the previous files stay, and
        so does the nonce), OSError when a file cannot be written."""
        kept, self.nonce = self.nonce, new_nonce()
        texts = self.render(shown)
        staging = self.managed.prefix / STAGING
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            for name, text in texts.items():
                (staging / f"{name}.conf").write_text(text)
            if self.system:
                await self._install_system(staging)
            else:
                await self._install_managed(staging)
        except BaseException:  # the live files still say the nonce they said
            self.nonce = kept
            raise
        self.live, self.shown, self.unloaded = texts, dict(shown), True
        return texts

    async def _install_managed(self, staging: Path) -> None:
        prefix = self.managed.prefix
        test_config = prefix / "nginx.test.conf"
        test_config.write_text(render_main(dataclasses.replace(self.managed, sites_dir=staging)))
        status, output = await self._spawner.run(
            [self.binary, "-t", "-q", "-p", str(prefix), "-c", str(test_config)], prefix
        )
        if status != 0:
            raise refused(output)
        self._swap(staging)
        shutil.rmtree(prefix / OLD, ignore_errors=True)

    async def _install_system(self, staging: Path) -> None:
        self._swap(staging)
        old = self.managed.prefix / OLD
        status, output = await self._spawner.run([self.binary, "-t", "-q"], self.managed.prefix)
        if status != 0:
            shutil.rmtree(self.managed.sites)
            old.rename(self.managed.sites)
            raise refused(output)
        shutil.rmtree(old, ignore_errors=True)

    def _swap(self, staging: Path) -> None:
        """The staged files live; the live ones kept as apps.old (until the caller drops them)."""
        old = self.managed.prefix / OLD
        shutil.rmtree(old, ignore_errors=True)
        self.managed.sites.rename(old)
        staging.rename(self.managed.sites)


def new_nonce() -> str:
    """8 hexadecimal digits from the kernel's random source (what ``secrets`` reads, without
    importing it: it brings hashlib, and OpenSSL's libcrypto, into the daemon)."""
    return os.urandom(4).hex()


def refused(output: bytes) -> DokuenError:
    """The error for ``nginx -t``'s refusal: its last two lines."""
    message = output.decode(errors="replace").strip().splitlines()
    return DokuenError(f"nginx -t refused the new config: {' '.join(message[-2:])}")
