"""Resource control with cgroups: a group for each app and for each process (and build) under
dokuend's own group, the app's limits on its group, each process placed in its group before
it runs app code, and a stop that kills a whole group at once.

Two ways a machine can have them: cgroup v2 with a delegated subtree (``cgroup.kill``,
``memory.max``, ``pids.max``), or cgroup v1 with the memory, pids and freezer hierarchies
mounted apart (freeze, SIGKILL every member, thaw). hierarchy.py finds which (or that there
are none: then the supervisor keeps its process groups and subreaper); limits.py says what
the limits are. The pure parts (names, paths, counters) come first, the file I/O after.
"""

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import psutil

from dokuen.isolate.carried import carry
from dokuen.isolate.identity import home_digest
from dokuen.isolate.limits import limit_files

V1_NEEDED = ("memory", "pids", "freezer")
V1_MEASURING = ("cpuacct",)  # used when mounted, for the cpu seconds of `ps`
V2_LIMITING = ("memory", "pids")
UNIFIED = "unified"  # the key of the one v2 directory in Layout.base
ENTER_FAILED = 125  # the exit status of a process that could not enter its group
# The first thing each process runs: as root, move itself into its group (each file named
# before `--`), then become the program (setpriv drops to the app's uid on the way).
ENTER = 'while [ "$1" != -- ]; do echo 0 > "$1" || exit 125; shift; done; shift; exec "$@"'


# -- the pure part -------------------------------------------------------------------


def home_id(home: Path) -> str:
    """A short name for a DOKUEN_HOME: two daemons with different homes never share groups."""
    return home_digest(home).hex()[:10]


@dataclass(frozen=True)
class Layout:
    """Where the groups go: ``base[c]`` is dokuend's group in the hierarchy of controller
    ``c`` (v1) or in the unified one (v2); ``controllers`` are those that limit or measure."""

    version: int
    base: Mapping[str, Path]
    controllers: frozenset[str]

    def hierarchy(self, file: str) -> Path:
        """The base directory that holds ``file`` (``memory.max``: the memory hierarchy)."""
        return self.base[UNIFIED] if self.version == 2 else self.base[file.split(".", 1)[0]]

    @property
    def roots(self) -> list[Path]:
        return sorted(set(self.base.values()))

    def describe(self) -> str:
        limits = sorted(self.controllers & {"memory", "pids"}) or ["no limits"]
        return f"cgroup v{self.version} ({', '.join(limits)})"


def parse_counters(text: str) -> dict[str, int]:
    """``key value`` lines (cpu.stat, memory.events, memory.oom_control) as a dict."""
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            found[key] = int(value)
    return found


# -- the I/O part --------------------------------------------------------------------


def _read(path: Path) -> str:
    """A control file's text, "" when it cannot be read. With os.read, not open(): ``ps``
    reads two of these a process, and a text file object costs over twice as much."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    except OSError:
        return ""
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="ascii") as file:
        file.write(text)


@dataclass(frozen=True)
class Group:
    """One cgroup, by its path below dokuend's group in every hierarchy of the layout."""

    layout: Layout
    name: PurePosixPath

    def child(self, name: str) -> "Group":
        return Group(self.layout, self.name / name)

    def directories(self) -> list[Path]:
        return [root / self.name for root in self.layout.roots]

    def file(self, name: str) -> Path:
        return self.layout.hierarchy(name) / self.name / name

    def create(self) -> None:
        """Make the group (and its parents) in every hierarchy; on v2, hand the limiting
        controllers down to it. Raises OSError."""
        for directory in self.directories():
            directory.mkdir(parents=True, exist_ok=True)
        wanted = self.layout.controllers & set(V2_LIMITING) if self.layout.version == 2 else set()
        parent = self.layout.base[UNIFIED] if wanted else Path()
        for part in self.name.parts[:-1] if wanted else ():
            parent = parent / part
            if wanted - set(_read(parent / "cgroup.subtree_control").split()):
                _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))

    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` a process writes 0 into to enter this group."""
        return [str(directory / "cgroup.procs") for directory in self.directories()]

    def _tree(self) -> Iterator[Path]:
        """Every directory of the group and its descendants, deepest first."""
        for top in self.directories():
            for root, dirs, _files in os.walk(top, topdown=False):
                yield from (Path(root) / d for d in dirs)
            if top.is_dir():
                yield top

    def pids(self) -> set[int]:
        """Every process in the group or below it (zombies have left already)."""
        found: set[int] = set()
        for directory in self._tree():
            found.update(int(pid) for pid in _read(directory / "cgroup.procs").split())
        return found

    def signal(self, signum: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def kill(self) -> None:
        """SIGKILL every process in the group at once, so none can fork away meanwhile:
        ``cgroup.kill`` on v2 (Linux 5.14), else freeze, kill every member, thaw."""
        if self.layout.version == 2 and self.file("cgroup.kill").exists():
            with contextlib.suppress(FileNotFoundError):
                _write(self.file("cgroup.kill"), "1")
            return
        frozen = self._freeze(True)
        self.signal(signal.SIGKILL)  # frozen ones die as they thaw, before running again
        if frozen:
            self._freeze(False)

    def _freeze(self, freeze: bool) -> bool:
        if self.layout.version == 2:
            control, value, done = "cgroup.freeze", "1" if freeze else "0", "frozen 1"
            state = "cgroup.events"
        elif "freezer" in self.layout.base:
            control = state = "freezer.state"
            value = done = "FROZEN" if freeze else "THAWED"
        else:
            return False
        try:
            _write(self.file(control), value)
        except OSError:
            return False
        for _ in range(200):  # frozen in well under a millisecond unless a task is in D
            if not freeze or done in _read(self.file(state)):
                break
            time.sleep(0.001)
        return True

    def remove(self) -> bool:
        """Remove the group and every group below it; False while processes remain."""
        for directory in self._tree():
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    return False
                raise
        return True

    def destroy(self, patience: float = 5.0) -> bool:
        """Kill every process in the group and below it, and remove them all; False if
        some process outlived ``patience`` seconds (stuck in the kernel)."""
        deadline = time.monotonic() + patience
        while True:
            self.kill()
            with contextlib.suppress(OSError):
                if self.remove():
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def set_limits(self, memory: int | None, processes: int | None) -> list[str]:
        """Apply the app's limits; returns what could not be applied (said to the user)."""
        problems = []
        writes = limit_files(self.layout.version, self.layout.controllers, memory, processes)
        for index, (file, value) in enumerate(writes):
            try:
                _write(self.file(file), value)
            except FileNotFoundError:
                continue  # memory.memsw / memory.swap.max: no swap accounting here
            except OSError as exc:
                # v1 keeps memsw >= limit at every step: a raised limit goes memsw first.
                if file == "memory.limit_in_bytes" and exc.errno == errno.EINVAL:
                    with contextlib.suppress(OSError):
                        _write(self.file(writes[index + 1][0]), value)
                        _write(self.file(file), value)
                        continue
                # Below what the app uses now (EBUSY): said, and the old limit stays.
                problems.append(f"cannot set {file} to {value}: {exc.strerror}")
        return problems

    def usage(self) -> tuple[float | None, int | None]:
        """CPU seconds and memory bytes the group used, where its controllers count them."""
        cpu: float | None = None
        memory: int | None = None
        if self.layout.version == 2:
            stat = parse_counters(_read(self.file("cpu.stat")))
            cpu = stat["usage_usec"] / 1e6 if "usage_usec" in stat else None
            current = _read(self.file("memory.current")).strip()
        else:
            if "cpuacct" in self.layout.base:
                nanoseconds = _read(self.file("cpuacct.usage")).strip()
                cpu = int(nanoseconds) / 1e9 if nanoseconds.isdigit() else None
            current = _read(self.file("memory.usage_in_bytes")).strip()
        if "memory" in self.layout.controllers and current.isdigit():
            memory = int(current)
        return cpu, memory

    def oom_kills(self) -> int:
        """How many processes of the group the kernel killed for going over its memory."""
        events = "memory.events" if self.layout.version == 2 else "memory.oom_control"
        if "memory" not in self.layout.controllers:
            return 0
        return parse_counters(_read(self.file(events))).get("oom_kill", 0)


def measure(group: Group | None, pid: int | None) -> dict[str, float | int | None]:
    """``cpu`` (seconds) and ``memory`` (bytes) of a process and all it started: from its
    group where the controllers count them, else summed over its processes by psutil."""
    cpu, memory = group.usage() if group is not None else (None, None)
    if pid is None or (cpu is not None and memory is not None):
        return {"cpu": cpu, "memory": memory}
    members = sorted(group.pids()) if group is not None else [pid]
    processes = []
    for each in members:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(each)
            processes += [process] if group else [process, *process.children(recursive=True)]
    cpu_sum, memory_sum = 0.0, 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            cpu_sum += times.user + times.system
            memory_sum += process.memory_info().rss
    return {
        "cpu": round(cpu if cpu is not None else cpu_sum, 3),
        "memory": memory if memory is not None else memory_sum,
    }


@dataclass
class Cgroups:
    """dokuend's groups: ``<base>/dokuen-<home id>/<app>/<type.N>.<life>`` for processes,
    ``<base>/dokuen-<home id>/build.<app>.<n>/<step>`` for builds."""

    layout: Layout
    home: Path
    setpriv: str | None  # util-linux setpriv, which drops to the app's uid once inside
    _lives: int = field(default=0, repr=False)

    @property
    def root(self) -> Group:
        return Group(self.layout, PurePosixPath(f"dokuen-{home_id(self.home)}"))

    def app(self, app: str) -> Group:
        return self.root.child(app)

    def process(self, app: str, name: str) -> Group:
        """A new group for one life of process ``name`` (``web.1``) of ``app``: the old
        ``web.1`` may still be stopping beside its replacement."""
        self._lives += 1
        return self.app(app).child(f"{name}.{self._lives}")

    def build(self, app: str) -> Group:
        self._lives += 1
        return self.root.child(f"build.{app}.{self._lives}")

    def entry(self, group: Group, user: int | None) -> list[str]:
        """The argv that puts a process in ``group`` and then, as uid ``user`` (with the
        gid of that number, no other groups), runs what follows it."""
        argv = ["/bin/sh", "-c", ENTER, "dokuen-enter", *group.procs_files(), "--"]
        if user is None:
            return argv
        if self.setpriv is None:
            raise OSError(errno.ENOENT, "setpriv is not installed (apt install util-linux)")
        return [*argv, self.setpriv, f"--reuid={user}", f"--regid={user}", "--clear-groups"]

    def enter(
        self, group: Group, user: int | None, argv: list[str], env: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str]]:
        """``entry`` and then ``argv``, and the environment to start them with: ``env``
        itself when nobody changes uid, else root's steps see none of it (carried.py)."""
        if user is None:
            return [*self.entry(group, None), *argv], dict(env)
        argv, env = carry(env, argv)
        return [*self.entry(group, user), *argv], env

    def clear(self) -> bool:
        """Kill and remove every group of this home (what an earlier dokuend left, or this
        one at its end). False if some process would not die."""
        return self.root.destroy()

    def clear_except(self, keep: set[str]) -> bool:
        """Like ``clear``, but leave the process groups named in ``keep`` (``dokuen-ID/
        APP/web.1.3``: processes a new dokuend adopted) and the app groups above them.
        New groups are numbered past every kept one. False if some process would not die."""
        if not keep:
            return self.clear()
        apps = {str(PurePosixPath(name).parent) for name in keep}
        for name in keep:
            life = name.rsplit(".", 1)[-1]
            self._lives = max(self._lives, int(life) if life.isdigit() else 0)
        cleared = True
        for top in self.root.directories():
            for entry in sorted(top.iterdir()) if top.is_dir() else []:
                group = self.root.child(entry.name)
                if not entry.is_dir():
                    continue
                if str(group.name) not in apps:
                    cleared = group.destroy() and cleared
                    continue
                for inner in sorted(p for p in entry.iterdir() if p.is_dir()):
                    if str(group.child(inner.name).name) not in keep:
                        cleared = group.child(inner.name).destroy() and cleared
        return cleared

    def status(self) -> dict[str, object]:
        """What ``dokuenctl status`` shows: the version, the groups, what they can limit."""
        missing = sorted(set(V2_LIMITING) - self.layout.controllers)
        return {
            "mode": f"v{self.layout.version}",
            "groups": [str(directory) for directory in self.root.directories()],
            "controllers": sorted(self.layout.controllers),
            "problem": (
                f"no {' or '.join(missing)} controller here: app limits on those are not applied"
                if missing
                else None
            ),
        }
