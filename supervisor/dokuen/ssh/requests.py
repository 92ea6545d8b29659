"""The ssh keys that may git push: dokuend owns ``$DOKUEN_HOME/.ssh/authorized_keys``
(keys.py renders and parses it, each key's apps included) and logs what each key asked
for."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from dokuen.control import Command, Output, text_arg
from dokuen.entrypoint import Entrypoint
from dokuen.errors import InvalidKey, ProtocolError
from dokuen.events import get_logger
from dokuen.names import check_ssh_key_name
from dokuen.ssh import keys as sshkeys

log = get_logger()


class SshKeyCommands:
    def __init__(
        self, file: Path, entrypoint: Callable[[], Entrypoint], group: int | None = None
    ) -> None:
        """``group``: the ssh account's group, which must read the file (keys.save)."""
        self._file = file
        self._entrypoint = entrypoint
        self._group = group
        self._lock = anyio.Lock()  # one change of the file at a time

    def handlers(self) -> dict[str, Command]:
        return {
            "ssh-keys": self.ssh_keys,
            "ssh-keys:add": self.ssh_keys_add,
            "ssh-keys:remove": self.ssh_keys_remove,
            "ssh:audit": self.ssh_audit,
        }

    async def ssh_keys(self, args: dict[str, Any], out: Output) -> Any:
        content = await anyio.to_thread.run_sync(sshkeys.load, self._file)
        return {
            "keys": [key.info() for key in content.keys],
            "others": len(content.others),
            "file": str(self._file),
        }

    async def ssh_keys_add(self, args: dict[str, Any], out: Output) -> Any:
        name = check_ssh_key_name(text_arg(args, "name"))
        text = text_arg(args, "key")
        if len(text) > sshkeys.MAX_KEY_TEXT:
            raise InvalidKey(f"{len(text)} bytes is too long for a public key file")
        apps = args.get("apps") or []
        if not isinstance(apps, list) or not all(isinstance(app, str) for app in apps):
            raise ProtocolError("argument 'apps' must be a list of app names")
        new = sshkeys.AuthorizedKey(name, sshkeys.parse_public_key(text), sshkeys.key_apps(apps))
        entrypoint = self._entrypoint()
        await anyio.to_thread.run_sync(sshkeys.fingerprint_with_ssh_keygen, new.key)
        async with self._lock:
            await anyio.to_thread.run_sync(sshkeys.add, self._file, entrypoint, new, self._group)
        log.info("ssh_key.added", **new.info())
        return new.info()

    async def ssh_keys_remove(self, args: dict[str, Any], out: Output) -> Any:
        name = check_ssh_key_name(text_arg(args, "name"))
        entrypoint = self._entrypoint()
        async with self._lock:
            await anyio.to_thread.run_sync(
                sshkeys.remove, self._file, entrypoint, name, self._group
            )
        log.info("ssh_key.removed", name=name)
        return {"name": name}

    async def ssh_audit(self, args: dict[str, Any], out: Output) -> Any:
        """Log what an ssh key asked for (its forced command reports it before it acts)."""
        key = check_ssh_key_name(text_arg(args, "key"))
        command = text_arg(args, "line")[:1000]
        if args.get("allowed") is True:
            # Three words at most (dokuenctl config:set blog): the rest may be secrets.
            log.info("ssh.command", key=key, command=" ".join(command.split()[:3]))
        else:
            log.warning("ssh.refused", key=key, command=command, reason=args.get("reason"))
        return None
