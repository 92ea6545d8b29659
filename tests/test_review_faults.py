"""Faults tried against today's merges (branch review3), each a boundary an app or a
failure might cross: one pipe's failing delivery in the same read turn as another pipe does
not end that other pipe; one slot whose log delivery fails ends alone and says so, its
process stopped, while another app's slot and its lines go on; a latch set before its
wait, or a wait cancelled while another is set, never hangs; a process started like the
daemon (ssl kept out at start) still does TLS through anyio and in a thread; a slot sees
its exit whether the output closed long before it or right after a burst, and a stopped
process's last line comes before "stopped"."""

import os
import sys
from pathlib import Path

import anyio
import psutil
import pytest

from dokuen.settings import PortRange
from dokuen.supervise.clock import SystemClock
from dokuen.supervise.formation import ProcessSpec
from dokuen.supervise.intake import BURST, Intake, Outlet
from dokuen.supervise.latch import Latch
from dokuen.supervise.logmux import LogMux
from dokuen.supervise.ports import PortPool
from dokuen.supervise.process import ProcessSlot, ProcessState, SlotConfig
from dokuen.supervise.restart import RestartPolicy
from dokuen.supervise.spawn import OsSpawner
from tests.test_intake import PipeChild, Received, Sink, nonblocking_pipe

pytestmark = pytest.mark.anyio


async def test_a_failure_in_a_turn_does_not_end_the_next_pipe_of_that_turn() -> None:
    """Both pipes wait for the same turn (the log was behind); the first one's delivery
    raises in that turn: the second is still read, then and later, and its pump ends
    normally at its end of file; only the first pump raises."""
    sink = Sink()
    intake = Intake(sink)
    bad_read, bad_write = nonblocking_pipe()
    good_read, good_write = nonblocking_pipe()
    good = Received()
    calls = 0

    def bad(block: bytes, stamp: str | None) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("the first app's log broke")

    raised: list[Exception] = []

    async def pump_bad() -> None:
        try:
            await intake.pump(PipeChild(Outlet(bad_read)), bad)
        except RuntimeError as exc:
            raised.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            sink.behind = True  # each readable pipe is paused, in the order it came
            tg.start_soon(pump_bad)
            await anyio.sleep(0.01)
            os.write(bad_write, b"x" * BURST + b"\n")
            while intake.paused < 1:
                await anyio.sleep(0.001)
            tg.start_soon(intake.pump, PipeChild(Outlet(good_read)), good)
            await anyio.sleep(0.01)
            os.write(good_write, b"g" * BURST + b"\n")
            while intake.paused < 2:
                await anyio.sleep(0.001)
            sink.behind = False  # the next turn reads the bad pipe first
            await good.until(b"g" * BURST + b"\n")
            os.write(good_write, b"and later\n")
            await good.until(b"g" * BURST + b"\nand later\n")
            os.close(good_write)  # its pump ends on its own
    assert [str(exc) for exc in raised] == ["the first app's log broke"]
    assert calls == 1
    assert intake.paused == 0
    for fd in (bad_read, bad_write, good_read):
        os.close(fd)


class BrokenFor(LogMux):
    """The unified log, whose delivery of one app's lines fails (a bug, a full disk)."""

    broken = "bad"

    def write_block(self, app: str, source: str, block: bytes, stamp: str | None = None) -> None:
        if app == self.broken and b"go" in block:
            raise OSError(28, "No space left on device")
        super().write_block(app, source, block, stamp)


TALKER = "import sys, time\nfor line in sys.stdin: print(line, end='', flush=True)\n"


def slot_for(
    app: str,
    mux: LogMux,
    ports: PortPool,
    home: Path,
    spawner: OsSpawner,
    command: str | None = None,
) -> ProcessSlot:
    """A slot on the test's one spawner for every slot (as the daemon has one: its
    ``live`` is every child)."""
    command = command or f'exec {sys.executable} -c "$TALKER" < "$FEED"'
    spec = ProcessSpec(app, "web", 1, command)
    feed = home / f"{app}.feed"
    if not feed.exists():
        os.mkfifo(feed)

    def environment(port: int) -> dict[str, str]:
        return {"PORT": str(port), "PATH": os.defpath, "TALKER": TALKER, "FEED": str(feed)}

    return ProcessSlot(
        SlotConfig(spec, home, environment, 2.0, RestartPolicy()),
        ports=ports,
        mux=mux,
        spawner=spawner,
        clock=SystemClock(),
    )


async def test_a_slot_whose_delivery_fails_ends_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two apps' slots on one intake; the first app's lines cannot be delivered: its slot
    ends (its process stopped, the failure said), the other app's process runs on and its
    lines are still written, after that failure, and the daemon's task group lives."""
    mux = BrokenFor(tmp_path / "dokuen.log", max_bytes=1 << 30, keep=1)
    ports = PortPool(PortRange(20000, 20009), is_free=lambda _port: True)
    spawner = OsSpawner()
    bad = slot_for("bad", mux, ports, tmp_path, spawner)
    good = slot_for("good", mux, ports, tmp_path, spawner)
    log = tmp_path / "dokuen.log"
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(mux.run)
            await tg.start(bad.run)
            await tg.start(good.run)
            assert bad.pid is not None
            assert good.pid is not None
            bad_pid = bad.pid
            with open(tmp_path / "good.feed", "w") as good_feed:
                good_feed.write("good one\n")
                good_feed.flush()
                with open(tmp_path / "bad.feed", "w") as bad_feed:
                    bad_feed.write("go wrong\n")
                    bad_feed.flush()
                    while bad.state is not ProcessState.STOPPED:
                        await anyio.sleep(0.01)
                assert not psutil.pid_exists(bad_pid) or (
                    psutil.Process(bad_pid).status() == psutil.STATUS_ZOMBIE
                )
                good_feed.write("good two\n")
                good_feed.flush()
                while b"good two" not in log.read_bytes():
                    await anyio.sleep(0.01)
            assert good.state is ProcessState.RUNNING
            await good.stop()
            await mux.drained()
            tg.cancel_scope.cancel()
    text = log.read_text()
    assert "good[web.1]: good one" in text
    assert "good[web.1]: good two" in text
    assert "bad[dokuen]: web.1 supervisor failed" in text
    assert "go wrong" not in text
    # Said, not swallowed by the slot's cancelled scope (it looked like a plain stop).
    err = capsys.readouterr().err
    assert "process.supervisor_failed" in err
    assert "No space left on device" in err


async def test_latch_waits_never_hang() -> None:
    """Set before the wait: the wait returns. A wait cancelled at the moment the latch is
    set (its future already done) neither hangs the others nor raises in set()."""
    early = Latch()
    early.set()
    with anyio.fail_after(1):
        await early.wait()
    latch = Latch()
    woke: list[int] = []

    async def waiter(n: int) -> None:
        await latch.wait()
        woke.append(n)

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(waiter, n)
            await anyio.sleep(0.01)
            async with anyio.create_task_group() as inner:
                inner.start_soon(waiter, 7)
                await anyio.sleep(0.01)
                inner.cancel_scope.cancel()  # its waiter's future is cancelled...
                latch.set()  # ...and the latch set in the same turn
    assert sorted(woke) == [0, 1, 2]
    with anyio.fail_after(1):
        await latch.wait()  # and every later wait returns at once


TLS_HANDSHAKES = """
import datetime, sys
import dokuen.cli.dokuend, dokuen.daemon
assert "ssl" not in sys.modules
import anyio, anyio.streams.tls
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
home = sys.argv[1]
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
now = datetime.datetime.now(datetime.UTC)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256()))
open(home + "/cert.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(home + "/key.pem", "wb").write(key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption()))
import ssl
server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server_ctx.load_cert_chain(home + "/cert.pem", home + "/key.pem")
client_ctx = ssl.create_default_context(cafile=home + "/cert.pem")

async def main():
    # anyio's TLS, through the stand-in its module imported while dokuend started
    listener = anyio.streams.tls.TLSListener(
        await anyio.create_tcp_listener(local_host="127.0.0.1"), server_ctx,
        standard_compatible=False)  # the clients close without TLS's close_notify
    port = listener.listener.extra(anyio.abc.SocketAttribute.local_port)
    async def serve(stream):
        async with stream:
            await stream.send(b"anyio-tls")
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        stream = await anyio.connect_tcp("127.0.0.1", port, tls=True, ssl_context=client_ctx,
                                         tls_hostname="localhost",
                                         tls_standard_compatible=False)
        print((await stream.receive()).decode(), end="|")
        await stream.aclose()
        # a blocking client in a thread, as boto3 (S3) and the ACME client are run
        def fetch():
            import socket
            with socket.create_connection(("127.0.0.1", port)) as raw:
                with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    return tls.recv(100).decode()
        print(await anyio.to_thread.run_sync(fetch), end="|")
        tg.cancel_scope.cancel()
    await listener.aclose()

anyio.run(main)
import asyncio.sslproto
print("ssl=None" if asyncio.sslproto.ssl is None else "ssl", end="")
"""


def test_tls_clients_in_a_process_that_started_like_the_daemon(tmp_path: Path) -> None:
    """lazylibs.py kept ssl out while asyncio and anyio were imported: anyio's TLS (a real
    handshake, both ways) and a blocking client in a thread (what boto3 and the ACME client
    do) still work; only asyncio's own TLS transports are without it (nothing uses them)."""
    import subprocess  # noqa: PLC0415

    done = subprocess.run(
        [sys.executable, "-c", TLS_HANDSHAKES, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "anyio-tls|anyio-tls|ssl=None"


MANY = 20_000
SPEAKERS = {
    # closes its output, then exits a while later: the exit is still seen
    "early": "echo before; exec >&- 2>&-; sleep 0.3; exit 3",
    # writes fast and exits at once: every line is in the log, in order
    "burst": f"exec {sys.executable} -c 'for n in range({MANY}): print(\"line %05d\" % n)'",
    # says goodbye on SIGTERM: its last line is in the log, before "stopped"
    "polite": "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 0.05; done",
}


async def test_an_exit_and_the_last_lines_are_seen_whatever_the_order(tmp_path: Path) -> None:
    """A process that closes its output long before it exits, one that exits right after
    a burst, one stopped that says goodbye: each exit is seen, no line is lost or moved."""
    mux = LogMux(tmp_path / "dokuen.log", max_bytes=1 << 30, keep=1)
    ports = PortPool(PortRange(20000, 20009), is_free=lambda _port: True)
    spawner = OsSpawner()
    slots = {
        app: slot_for(app, mux, ports, tmp_path, spawner, cmd) for app, cmd in SPEAKERS.items()
    }
    log = tmp_path / "dokuen.log"
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(mux.run)
            for slot in slots.values():
                await tg.start(slot.run)
            while not (
                b"early[dokuen]: web.1 exited with code 3" in (text := log.read_bytes())
                and b"burst[dokuen]: web.1 exited with code 0" in text
                and b"polite[web.1]: up" in text
            ):
                await anyio.sleep(0.01)
            for slot in slots.values():
                await slot.stop()
            await mux.drained()
            tg.cancel_scope.cancel()
    lines = log.read_text().splitlines()
    early = [line.split(": ", 1)[1] for line in lines if " early[" in line]
    assert early[1:3] == ["before", "web.1 exited with code 3, restarting in 0.1s"]
    burst = [line.split(": ", 1)[1] for line in lines if " burst[web.1]: " in line]
    assert burst[:MANY] == [f"line {n:05d}" for n in range(MANY)]
    polite = [line.split(": ", 1)[1] for line in lines if " polite[" in line]
    assert polite[1] == "up"  # then the shell may say its sleep was "Terminated"
    assert polite[-2:] == ["bye", "web.1 stopped (exited with code 0)"]
