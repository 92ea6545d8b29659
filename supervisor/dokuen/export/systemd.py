"""systemd units of one release (foreman's export, and more of the app): pure text.

    APP.target              wants APP-TYPE@N.service for each process of the formation
    APP-TYPE@.service       one template a process type; instance N is TYPE.N (DYNO)
    APP-release.service     the release phase: a oneshot the processes are ordered after
    APP.slice               the app's limits, all its processes together (as its cgroup)
    APP.env                 its config (secret: mode 0600), the units' EnvironmentFile
    APP.sysusers.conf       the app's user, for systemd-sysusers

``PORT`` of instance N of the Kth type (from 0, Procfile order) is BASE + 100*K + N - 1.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass

from dokuen.export.spec import ExportSpec, File, ProcessType

# RestartSteps= and RestartMaxDelaySec= (a backoff like dokuend's) arrived in systemd 254;
# older ones warn on the keys, so they are written only for a target that knows them.
BACKOFF_STEPS_SINCE = 254
FIRST_DELAY_MS = 100  # dokuend's RestartPolicy: 0.1 s, doubling up to 30 s
MAX_DELAY_S = 30
FAST_FAILURE_WINDOW_S = 60  # restarts counted against DOKUEN_RESTART_LIMIT in this long


@dataclass(frozen=True)
class SystemdTarget:
    """Where the app lives on the machine the units are for."""

    app_dir: str  # the slug, unpacked: WorkingDirectory
    config_dir: str = "/etc/dokuen-export"  # APP.env goes here
    port_base: int = 5000
    systemd_version: int = 252  # Debian 12's


def port_base(spec: ExportSpec, target: SystemdTarget, process: ProcessType) -> int:
    """The PORT of instance 1 of ``process``; instance N gets this + N - 1."""
    return target.port_base + 100 * [t.name for t in spec.types].index(process.name)


def render_systemd(spec: ExportSpec, target: SystemdTarget) -> list[File]:
    """Every file of the export, in a fixed order, the same bytes for the same input."""
    files = [File(f"{spec.app}.target", _target(spec).encode())]
    files += [
        File(f"{spec.app}-{t.name}@.service", _template(spec, target, t).encode())
        for t in spec.types
    ]
    if spec.release_command is not None:
        files.append(File(f"{spec.app}-release.service", _release(spec, target).encode()))
    if spec.memory_limit is not None or spec.process_limit is not None:
        files.append(File(f"{spec.app}.slice", _slice(spec).encode()))
    files.append(File(f"{spec.app}.env", environment_file(spec).encode(), secret=True))
    files.append(File(f"{spec.app}.sysusers.conf", _sysusers(spec).encode()))
    return files


def instances(spec: ExportSpec) -> list[str]:
    """The units the target wants: ``APP-web@1.service``, ... (formation order)."""
    return [
        f"{spec.app}-{t.name}@{index}.service"
        for t in spec.types
        for index in range(1, t.count + 1)
    ]


def _header(spec: ExportSpec) -> str:
    return f"# {spec.app} {spec.release} ({spec.created}), exported from Dokuen\n"


def _target(spec: ExportSpec) -> str:
    wants = " ".join(instances(spec))
    return (
        f"{_header(spec)}[Unit]\n"
        f"Description={spec.app}: every process of its formation\n"
        + (f"Wants={wants}\n" if wants else "")
        + "\n[Install]\nWantedBy=multi-user.target\n"
    )


def _service_common(spec: ExportSpec, target: SystemdTarget) -> Iterator[str]:
    yield f"User={spec.app}\n"
    yield f"Group={spec.app}\n"
    yield f"WorkingDirectory={target.app_dir}\n"
    yield f"EnvironmentFile={target.config_dir}/{spec.app}.env\n"
    # The app's HOME: a writable directory of its own, kept across deploys (dokuend's data/).
    yield f"StateDirectory={spec.app}\n"
    yield f"Environment=HOME=/var/lib/{spec.app} APP={spec.app}\n"
    if spec.memory_limit is not None or spec.process_limit is not None:
        yield f"Slice={spec.app}.slice\n"


def _template(spec: ExportSpec, target: SystemdTarget, process: ProcessType) -> str:
    base = port_base(spec, target, process)
    lines = [
        _header(spec),
        "[Unit]\n",
        f"Description={spec.app} {process.name}.%i\n",
        f"PartOf={spec.app}.target\n",
    ]
    if spec.release_command is not None:
        lines += [
            f"Requires={spec.app}-release.service\n",
            f"After={spec.app}-release.service\n",
        ]
    if spec.restart_limit is None:
        lines.append("StartLimitIntervalSec=0\n")  # DOKUEN_RESTART_LIMIT=forever
    else:
        lines += [
            f"StartLimitIntervalSec={FAST_FAILURE_WINDOW_S}\n",
            f"StartLimitBurst={spec.restart_limit}\n",
        ]
    lines += ["\n[Service]\n", *_service_common(spec, target)]
    lines.append(f"Environment=DYNO={process.name}.%i PS={process.name}.%i\n")
    prefix = f"export PORT=$$(({base} + %i - 1)); "
    lines.append(f'ExecStart=/bin/sh -c "{prefix}{exec_quote(process.shell)}"\n')
    lines += [
        "Restart=always\n",
        f"RestartSec={FIRST_DELAY_MS}ms\n",
    ]
    if target.systemd_version >= BACKOFF_STEPS_SINCE:
        steps = math.ceil(math.log2(MAX_DELAY_S * 1000 / FIRST_DELAY_MS))
        lines += [f"RestartSteps={steps}\n", f"RestartMaxDelaySec={MAX_DELAY_S}s\n"]
    lines += [
        f"TimeoutStopSec={_seconds(spec.stop_timeout)}\n",
        "\n[Install]\n",
        f"WantedBy={spec.app}.target\n",
    ]
    return "".join(lines)


def _release(spec: ExportSpec, target: SystemdTarget) -> str:
    assert spec.release_command is not None
    return "".join(
        [
            _header(spec),
            "[Unit]\n",
            f"Description={spec.app} {spec.release}: the release phase, before its processes\n",
            f"PartOf={spec.app}.target\n",
            "\n[Service]\n",
            "Type=oneshot\n",
            "RemainAfterExit=yes\n",
            *_service_common(spec, target),
            "Environment=DYNO=release.1 PS=release.1\n",
            f'ExecStart=/bin/sh -c "{exec_quote(spec.release_command.shell)}"\n',
        ]
    )


def _slice(spec: ExportSpec) -> str:
    lines = [_header(spec), "[Unit]\n", f"Description={spec.app}: its limits\n", "\n[Slice]\n"]
    if spec.memory_limit is not None:
        lines.append(f"MemoryMax={spec.memory_limit}\n")
    if spec.process_limit is not None:
        lines.append(f"TasksMax={spec.process_limit}\n")
    return "".join(lines)


def _sysusers(spec: ExportSpec) -> str:
    return (
        f"# {spec.app}'s user: install as /etc/sysusers.d/{spec.app}.conf, then run "
        "systemd-sysusers\n"
        f'u {spec.app} - "Dokuen app {spec.app}" /var/lib/{spec.app}\n'
    )


def _seconds(value: float) -> str:
    return f"{value:g}s"


def exec_quote(text: str) -> str:
    """``text`` for the inside of a double-quoted ExecStart= word: systemd unescapes C
    escapes, expands ``%`` specifiers and ``$`` variables, so each is escaped."""
    out = []
    for char in text:
        if char in '\\"':
            out.append("\\" + char)
        elif char == "%":
            out.append("%%")
        elif char == "$":
            out.append("$$")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def environment_file(spec: ExportSpec) -> str:
    """The config as an EnvironmentFile: ``KEY="VALUE"`` a line, sorted, each value in
    double quotes with ``\\``, ``"``, ``$`` and backquote escaped (systemd's env-file syntax;
    a newline inside the quotes is part of the value)."""
    lines = [f"# {spec.app} {spec.release}: its config. SECRET: keep it mode 0600, root's.\n"]
    for key, value in sorted(spec.env.items()):
        escaped = "".join("\\" + c if c in '\\"$`' else c for c in value)
        lines.append(f'{key}="{escaped}"\n')
    return "".join(lines)
