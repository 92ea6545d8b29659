"""The export renderers (pure): golden files for the systemd units and the Kubernetes
manifests of a fixed spec, each unit accepted by ``systemd-analyze verify`` and each
manifest by ``kubernetes-validate``; ExecStart quoting proven by systemd's own parse; no
config value outside the files marked secret; the same spec gives the same bytes."""

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from dokuen.errors import ProtocolError
from dokuen.export.kubernetes import KubernetesTarget, render_kubernetes
from dokuen.export.spec import ExportSpec, File, ProcessType, spec_from_json
from dokuen.export.systemd import SystemdTarget, environment_file, exec_quote, render_systemd

GOLDEN = Path(__file__).parent / "golden" / "export"
KUBERNETES_VERSION = "1.37.0"  # the newest the offline schemas know
TRICKY = "echo \"a b\" 'c' 100% $HOME ${PORT} `id` \\\\ ;"
SPEC = ExportSpec(
    app="shop",
    release="v7",
    created="2026-12-01T10:00:00+00:00",
    types=(
        ProcessType("web", "gunicorn app:app", "exec gunicorn app:app", 2),
        ProcessType("worker", TRICKY, TRICKY, 1),
        ProcessType("clock", "python clock.py", "exec python clock.py", 0),
    ),
    release_command=ProcessType("release", "python migrate.py", "exec python migrate.py", 0),
    env={"SECRET_TOKEN": 's3cr3t "q" $x `y` \\z\nline2', "GREETING": "hello"},
    hosts=("shop.localhost", "shop.example.com"),
    health_path="/health",
    boot_timeout=30.0,
    stop_timeout=15.0,
    restart_limit=5,
    memory_limit=256 << 20,
    process_limit=64,
    uid=2100065536,
    gid=2100065536,
    slug_path="/var/lib/dokuen/apps/shop/releases/v7",
    database=True,
)
SECRETS = ("s3cr3t", "line2")


def shell_words(line: str) -> list[str]:
    """Words of a command line as systemd shows it: double quotes, backslash escapes."""
    words: list[str] = []
    word, quoted, escaped, started = "", False, False, False
    for char in line:
        if escaped:
            word, escaped = word + char, False
        elif char == "\\":
            escaped = started = True
        elif char == '"':
            quoted, started = not quoted, True
        elif char == " " and not quoted:
            if started:
                words.append(word)
            word, started = "", False
        else:
            word, started = word + char, True
    return [*words, word] if started else words


def golden(directory: str, files: list[File]) -> None:
    """Compare with tests/golden/export/DIR/*. Missing files are written: read, commit."""
    for file in files:
        path = GOLDEN / directory / file.path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(file.content)
        assert file.content == path.read_bytes(), f"{path} changed; delete it to accept"
    assert sorted(p.name for p in (GOLDEN / directory).iterdir()) == sorted(f.path for f in files)


def write(directory: Path, files: list[File]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for file in files:
        (directory / file.path).write_bytes(file.content)


def test_systemd_units_match_golden_files_and_the_spec_round_trips() -> None:
    files = render_systemd(SPEC, SystemdTarget("/srv/shop"))
    golden("systemd", files)
    assert spec_from_json(SPEC.to_json()) == SPEC
    assert render_systemd(spec_from_json(SPEC.to_json()), SystemdTarget("/srv/shop")) == files
    assert {f.path for f in files if f.secret} == {"shop.env"}
    for file in files:
        assert file.mode == (0o600 if file.secret else 0o644)
        if not file.secret:
            assert not any(s.encode() in file.content for s in SECRETS), file.path


def test_the_target_wants_the_formation_and_the_release_phase_comes_first() -> None:
    files = {f.path: f.content.decode() for f in render_systemd(SPEC, SystemdTarget("/srv/shop"))}
    assert (
        "Wants=shop-web@1.service shop-web@2.service shop-worker@1.service\n"
        in files["shop.target"]
    )
    web = files["shop-web@.service"]
    assert "Requires=shop-release.service\nAfter=shop-release.service\n" in web
    assert 'ExecStart=/bin/sh -c "export PORT=$$((5000 + %i - 1)); exec gunicorn app:app"' in web
    assert "export PORT=$$((5100 + %i - 1))" in files["shop-worker@.service"]
    assert "StartLimitBurst=5\n" in web
    assert "RestartSteps" not in web
    assert "MemoryMax=268435456\nTasksMax=64\n" in files["shop.slice"]
    assert "Type=oneshot\n" in files["shop-release.service"]
    newer = render_systemd(SPEC, SystemdTarget("/srv/shop", systemd_version=254))
    assert "RestartSteps=9\nRestartMaxDelaySec=30s\n" in newer[1].content.decode()
    forever = render_systemd(replace(SPEC, restart_limit=None), SystemdTarget("/srv/shop"))
    assert "StartLimitIntervalSec=0\n" in forever[1].content.decode()


def test_exec_start_quoting_escapes_what_systemd_would_expand() -> None:
    assert exec_quote('a"b\\c%i$X\t\x7f') == 'a\\"b\\\\c%%i$$X\\x09\\x7f'


def test_the_environment_file_quotes_every_value() -> None:
    text = environment_file(SPEC)
    assert 'SECRET_TOKEN="s3cr3t \\"q\\" \\$x \\`y\\` \\\\z\nline2"\n' in text
    assert 'GREETING="hello"\n' in text


needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def local_systemd() -> int:
    first = subprocess.run(
        ["systemd-analyze", "--version"], capture_output=True, text=True, check=True
    )
    return int(first.stdout.split()[1])


@needs_systemd
def test_systemd_analyze_verify_accepts_every_unit_and_parses_exec_start_back(
    tmp_path: Path,
) -> None:
    files = render_systemd(SPEC, SystemdTarget("/srv/shop", systemd_version=local_systemd()))
    write(tmp_path, files)
    units = [
        str(tmp_path / f.path) for f in files if f.path.endswith((".service", ".target", ".slice"))
    ]
    # Instances of the templates: systemd finds the template beside the named instance.
    instances = [str(tmp_path / name) for name in ("shop-web@1.service", "shop-worker@2.service")]
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units, *instances],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    # systemd's own parse of the worker's ExecStart (specifiers expanded at load time, $$
    # at exec time), read back with shell quoting: the command as the Procfile wrote it.
    debug = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", instances[1]],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SYSTEMD_LOG_LEVEL": "debug"},
        check=False,
    )
    lines = [
        line.split("Command Line: ", 1)[1]
        for line in (debug.stdout + debug.stderr).splitlines()
        if "Command Line: " in line and "5100" in line
    ]
    assert lines, debug.stderr[-3000:]
    argv = [word.replace("$$", "$") for word in shell_words(lines[0])]
    assert argv == ["/bin/sh", "-c", "export PORT=$((5100 + 2 - 1)); " + TRICKY]


def test_kubernetes_manifests_match_golden_files() -> None:
    target = KubernetesTarget(
        "registry.example.com/shop:v7", tls_secrets={"shop.example.com": "shop-tls"}
    )
    files = render_kubernetes(SPEC, target)
    golden("kubernetes", files)
    assert [f.path for f in files if f.secret] == ["00-config.secret.yaml"]
    for file in files:
        if not file.secret:
            assert not any(s.encode() in file.content for s in SECRETS), file.path
    docs = {f.path: yaml.safe_load(f.content) for f in files}
    web = docs["20-web.deployment.yaml"]
    assert web["spec"]["replicas"] == 2
    assert docs["20-clock.deployment.yaml"]["spec"]["replicas"] == 0
    container = web["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["startupProbe"]["failureThreshold"] == 15
    assert {"name": "PORT", "value": "5000"} in container["env"]
    assert container["resources"]["limits"] == {"memory": "268435456"}
    assert docs["00-config.secret.yaml"]["stringData"]["SECRET_TOKEN"] == SPEC.env["SECRET_TOKEN"]
    job = docs["10-release.job.yaml"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    ingress = docs["40-ingress.yaml"]["spec"]
    assert [r["host"] for r in ingress["rules"]] == ["shop.localhost", "shop.example.com"]
    assert ingress["tls"] == [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]
    tcp = render_kubernetes(replace(SPEC, health_path=None), target)
    tcp_web = yaml.safe_load(tcp[2].content)["spec"]["template"]["spec"]["containers"][0]
    assert tcp_web["livenessProbe"]["tcpSocket"] == {"port": "http"}


def test_kubernetes_validate_accepts_every_document(tmp_path: Path) -> None:
    validate = Path(
        shutil.which("kubernetes-validate")
        or Path(__file__).parents[1] / ".venv/bin/kubernetes-validate"
    )
    files = render_kubernetes(
        SPEC, KubernetesTarget("shop:v7", tls_secrets={"shop.example.com": "t"})
    )
    files += render_kubernetes(
        replace(SPEC, release_command=None, health_path=None, uid=None, memory_limit=None),
        KubernetesTarget("shop:v7"),
    )
    for index, file in enumerate(files):
        (tmp_path / f"{index}-{file.path}").write_bytes(file.content)
    result = subprocess.run(
        [
            str(validate),
            "--strict",
            "-k",
            KUBERNETES_VERSION,
            *sorted(map(str, tmp_path.iterdir())),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(files), result.stdout
    # The validator is not a rubber stamp: a count that is not a number is refused.
    broken = tmp_path / "broken.yaml"
    broken.write_bytes(files[2].content.replace(b"replicas: 2", b"replicas: two"))
    refused = subprocess.run(
        [str(validate), "--strict", "-k", KUBERNETES_VERSION, str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert "replicas" in refused.stdout + refused.stderr


def test_a_spec_that_is_not_one_is_a_protocol_error() -> None:
    broken = {**SPEC.to_json(), "env": {"BAD KEY": "x"}}
    with pytest.raises(ProtocolError, match="not a variable name"):
        spec_from_json(broken)
    with pytest.raises(ProtocolError, match="not an export spec"):
        spec_from_json({"app": "shop"})
