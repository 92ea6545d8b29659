"""The daemon's requests on one-off processes: ``run`` (attached to its requester, or the
older way: output only), ``run:detached`` and ``ps:stop run.N``."""

import contextlib
from collections.abc import Callable
from typing import Any

import anyio

from dokuen.apps import releasing
from dokuen.apps.app import App
from dokuen.apps.attach import Attached, Requester
from dokuen.apps.options import app_options
from dokuen.apps.runtime import Runtime
from dokuen.control import Command, Output, text_arg
from dokuen.errors import InvalidName
from dokuen.names import parse_process_name


async def _quiet(_text: str) -> None:
    """Where a detached run's requester output would go: it has none (its output is in the
    unified log)."""


def _command(args: dict[str, Any], verb: str) -> str:
    command = text_arg(args, "line")
    if not command.strip():
        raise InvalidName(f"nothing to run (give a command, e.g. dokuenctl {verb} blog env)")
    return command


class RunCommands:
    """``run``, ``run:detached`` and ``ps:stop``, on the app ``find`` names."""

    def __init__(
        self, find: Callable[[dict[str, Any]], App], runtime: Callable[[], Runtime]
    ) -> None:
        self._find = find
        self._runtime = runtime

    def handlers(self) -> dict[str, Command]:
        return {"run": self.run_once, "run:detached": self.run_detached, "ps:stop": self.ps_stop}

    async def run_once(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find(args)
        command = _command(args, "run")

        async def say(text: str) -> None:
            # A requester that went away is noticed by hung_up; the process is killed.
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await out.write(text)

        attach = Requester.from_request(args, out)
        # An attached requester's hang-up is seen by the attachment, which reads from it.
        hung_up = out.wait_closed if attach is None else anyio.sleep_forever
        return {"status": await releasing.run_once(app, command, say, hung_up, attach)}

    async def run_detached(self, args: dict[str, Any], out: Output) -> Any:
        app = self._find(args)
        command = _command(args, "run:detached")
        grace = app_options(app.config(), self._runtime().settings.stop_timeout).stop_timeout

        async def launch(attach: Attached) -> int:
            return await releasing.run_once(app, command, _quiet, anyio.sleep_forever, attach)

        return {"name": await app.detached.start(launch, grace)}

    async def ps_stop(self, args: dict[str, Any], out: Output) -> Any:
        """Stop a detached run, as Heroku's ps:stop run.N does; the names stopped."""
        app = self._find(args)
        target = text_arg(args, "target")
        process_type, index = parse_process_name(target)
        if process_type != "run" or index is None:
            raise InvalidName(
                f"ps:stop stops detached runs (run.N); {target} belongs to the formation: "
                f"scale it (dokuenctl ps:scale {app.name} {process_type}=0) or stop the app "
                f"(dokuenctl stop {app.name})"
            )
        return await app.detached.stop(target)
