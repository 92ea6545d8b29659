"""Table tests for the daemon's settings: defaults, the environment, dokuend.env."""

import os
from pathlib import Path

import pytest

from dokuen.errors import SettingsError
from dokuen.settings import (
    DEFAULT_PATH,
    SETTINGS_FILE,
    PortRange,
    Settings,
    default_home,
    home_and_socket,
    load_settings,
)


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings({}, tmp_path)
    assert settings == Settings(
        home=tmp_path,
        socket=tmp_path / "dokuend.sock",
        port_range=PortRange(5000, 5999),
        log_max_bytes=50 * 1024 * 1024,
        log_keep=5,
        stop_timeout=10.0,
        keep_releases=5,
        app_path=DEFAULT_PATH,
    )
    assert settings.log_file == tmp_path / "logs" / "dokuen.log"


@pytest.mark.parametrize(
    ("key", "text", "field", "value"),
    [
        ("DOKUEN_PORT_RANGE", "6000-6099", "port_range", PortRange(6000, 6099)),
        ("DOKUEN_PORT_RANGE", " 6000 - 6099 ", "port_range", PortRange(6000, 6099)),
        ("DOKUEN_LOG_MAX_BYTES", "4096", "log_max_bytes", 4096),
        ("DOKUEN_LOG_MAX_BYTES", "104857600", "log_max_bytes", 100 << 20),
        ("DOKUEN_LOG_KEEP", "0", "log_keep", 0),
        ("DOKUEN_LOG_KEEP", "12", "log_keep", 12),
        ("DOKUEN_STOP_TIMEOUT", "0", "stop_timeout", 0.0),
        ("DOKUEN_STOP_TIMEOUT", "2.5", "stop_timeout", 2.5),
        ("DOKUEN_STOP_TIMEOUT", "0.05", "stop_timeout", 0.05),
        ("DOKUEN_KEEP_RELEASES", "1", "keep_releases", 1),
        ("DOKUEN_CONTROL_TIMEOUT", "1.5", "control_timeout", 1.5),
        ("DOKUEN_KEEP_RELEASES", "20", "keep_releases", 20),
        ("DOKUEN_APP_PATH", "/opt/bin:/usr/bin", "app_path", "/opt/bin:/usr/bin"),
        ("DOKUEN_BUILD_TIMEOUT", "60", "build_timeout", 60.0),
        ("DOKUEN_BUILD_MEMORY", "512", "build_memory_mib", 512),
        ("DOKUEN_BUILD_PROCESSES", "64", "build_processes", 64),
        ("DOKUEN_BUILD_UIDS", "3000000-3000099", "build_uids", (3000000, 3000099)),
        ("DOKUEN_BUILD_UIDS", "home", "build_uids", "home"),
        ("DOKUEN_APP_UIDS", "off", "app_uids", "off"),
        ("DOKUEN_POSTGRES", "managed", "postgres", "managed"),
        ("DOKUEN_POSTGRES", "off", "postgres", "off"),
        ("DOKUEN_POSTGRES_PORT", "6543", "postgres_port", 6543),
        (
            "DOKUEN_POSTGRES_BIN",
            "/usr/lib/postgresql/16/bin",
            "postgres_bin",
            "/usr/lib/postgresql/16/bin",
        ),
        ("DOKUEN_POSTGRES_USER", "nobody", "postgres_user", "nobody"),
        ("DOKUEN_HTTPS_PORT", "8443", "https_port", 8443),
        ("DOKUEN_ACME_EMAIL", "ops@example.com", "acme_email", "ops@example.com"),
        (
            "DOKUEN_ACME_DIRECTORY",
            "https://acme-staging-v02.api.letsencrypt.org/directory",
            "acme_directory",
            "https://acme-staging-v02.api.letsencrypt.org/directory",
        ),
        ("DOKUEN_ACME_CA_BUNDLE", "/etc/hostname", "acme_ca_bundle", "/etc/hostname"),
        ("DOKUEN_POSTGRES_URL", "postgres://a:b@db/x", "postgres_url", "postgres://a:b@db/x"),
    ],
)
def test_from_environment(tmp_path: Path, key: str, text: str, field: str, value: object) -> None:
    settings = load_settings({key: text}, tmp_path)
    assert getattr(settings, field) == value
    assert type(getattr(settings, field)) is type(value)


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("DOKUEN_PORT_RANGE", "5000", "DOKUEN_PORT_RANGE='5000' is not a range like 5000-5999"),
        ("DOKUEN_PORT_RANGE", "", "DOKUEN_PORT_RANGE='' is not a range"),
        ("DOKUEN_LOG_MAX_BYTES", "big", "DOKUEN_LOG_MAX_BYTES='big' is not a number"),
        ("DOKUEN_LOG_MAX_BYTES", "1.5", "DOKUEN_LOG_MAX_BYTES='1.5' is not a number"),
        ("DOKUEN_LOG_MAX_BYTES", "4095", "DOKUEN_LOG_MAX_BYTES='4095' must be at least 4096"),
        ("DOKUEN_LOG_KEEP", "-1", "DOKUEN_LOG_KEEP='-1' must be at least 0"),
        ("DOKUEN_LOG_KEEP", "", "DOKUEN_LOG_KEEP='' is not a number"),
        ("DOKUEN_STOP_TIMEOUT", "soon", "DOKUEN_STOP_TIMEOUT='soon' is not a number"),
        ("DOKUEN_STOP_TIMEOUT", "-0.5", "DOKUEN_STOP_TIMEOUT='-0.5' must be at least 0"),
        ("DOKUEN_STOP_TIMEOUT", "nan", "DOKUEN_STOP_TIMEOUT='nan' is not a finite number"),
        ("DOKUEN_STOP_TIMEOUT", "inf", "DOKUEN_STOP_TIMEOUT='inf' is not a finite number"),
        ("DOKUEN_STOP_TIMEOUT", "-inf", "DOKUEN_STOP_TIMEOUT='-inf' must be at least 0"),
        ("DOKUEN_KEEP_RELEASES", "0", "DOKUEN_KEEP_RELEASES='0' must be at least 1"),
        ("DOKUEN_CONTROL_TIMEOUT", "0", "DOKUEN_CONTROL_TIMEOUT='0' must be at least 0.1"),
        ("DOKUEN_APP_PATH", "", "DOKUEN_APP_PATH is empty"),
        ("DOKUEN_HTTPS_PORT", "0", "DOKUEN_HTTPS_PORT='0' is not a TCP port"),
        ("DOKUEN_ACME", "yes", "DOKUEN_ACME='yes' is not 0 or 1"),
        ("DOKUEN_ACME", "1", "DOKUEN_ACME=1 needs DOKUEN_ACME_EMAIL"),
        ("DOKUEN_ACME_EMAIL", "ops", "DOKUEN_ACME_EMAIL='ops' is not an email address"),
        (
            "DOKUEN_ACME_DIRECTORY",
            "http://ca/dir",
            "DOKUEN_ACME_DIRECTORY='http://ca/dir' is not an",
        ),
        ("DOKUEN_ACME_CA_BUNDLE", "/no.pem", "DOKUEN_ACME_CA_BUNDLE='/no.pem': no such file"),
        ("DOKUEN_BUILD_TIMEOUT", "0.5", "DOKUEN_BUILD_TIMEOUT='0.5' must be at least 1"),
        ("DOKUEN_BUILD_MEMORY", "32", "DOKUEN_BUILD_MEMORY='32' must be at least 64"),
        ("DOKUEN_BUILD_UIDS", "nobody", "DOKUEN_BUILD_UIDS='nobody' is not a range of unused"),
        ("DOKUEN_APP_UIDS", "on", "DOKUEN_APP_UIDS='on' is not one of auto, off"),
        ("DOKUEN_BUILD_UIDS", "0-99", "DOKUEN_BUILD_UIDS='0-99' is not a range of unused"),
        ("DOKUEN_BUILD_UIDS", "5000-4000", "DOKUEN_BUILD_UIDS='5000-4000' is not a range"),
        ("DOKUEN_BUILD_UIDS", "4294967295-4294967295", "DOKUEN_BUILD_UIDS='4294967295"),
        ("DOKUEN_POSTGRES", "system", "DOKUEN_POSTGRES='system' is not one of auto, managed,"),
        ("DOKUEN_POSTGRES_PORT", "0", "DOKUEN_POSTGRES_PORT='0' is not a TCP port"),
        ("DOKUEN_POSTGRES_USER", "no-such-user-x", "DOKUEN_POSTGRES_USER='no-such-user-x': no"),
        ("DOKUEN_POSTGRES_URL", "mysql://a:b@c/d", "DOKUEN_POSTGRES_URL must be a URL like"),
        ("DOKUEN_BACKUP_URL", "", "DOKUEN_BACKUP_URL is empty"),
    ],
)
def test_bad_environment(tmp_path: Path, key: str, text: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({key: text}, tmp_path)
    assert str(info.value).startswith(message)


def test_the_postgres_password_is_never_shown(tmp_path: Path) -> None:
    url = "postgres://admin:hunter2@db.example/postgres"
    settings = load_settings({"DOKUEN_POSTGRES": "external", "DOKUEN_POSTGRES_URL": url}, tmp_path)
    assert settings.postgres_url == url
    assert "hunter2" not in repr(settings)
    with pytest.raises(SettingsError) as info:
        load_settings({"DOKUEN_POSTGRES_URL": url + "?password=hunter2"}, tmp_path)
    assert "hunter2" not in str(info.value)


def test_external_postgres_needs_its_url(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="DOKUEN_POSTGRES=external needs DOKUEN_POSTGRES_URL"):
        load_settings({"DOKUEN_POSTGRES": "external"}, tmp_path)


def test_other_environment_variables_are_ignored(tmp_path: Path) -> None:
    environ = {"PATH": "/nowhere", "HOME": "/root", "LOG_KEEP": "x", "dokuen_log_keep": "x"}
    assert load_settings(environ, tmp_path) == load_settings({}, tmp_path)


def write_settings_file(home: Path, text: str) -> Path:
    path = home / SETTINGS_FILE
    path.write_text(text)
    return path


def test_settings_file(tmp_path: Path) -> None:
    write_settings_file(
        tmp_path,
        "# dokuend settings\n"
        "DOKUEN_PORT_RANGE=7000-7010\n"
        "export DOKUEN_LOG_KEEP=2\n"
        "DOKUEN_STOP_TIMEOUT='3.5'\n"
        'DOKUEN_APP_PATH="/opt/bin:/bin"\n',
    )
    settings = load_settings({}, tmp_path)
    assert settings.port_range == PortRange(7000, 7010)
    assert settings.log_keep == 2
    assert settings.stop_timeout == 3.5
    assert settings.app_path == "/opt/bin:/bin"
    assert settings.keep_releases == 5  # not in the file: default


def test_environment_wins_over_settings_file(tmp_path: Path) -> None:
    write_settings_file(tmp_path, "DOKUEN_LOG_KEEP=2\nDOKUEN_KEEP_RELEASES=not-a-number\n")
    settings = load_settings({"DOKUEN_LOG_KEEP": "7", "DOKUEN_KEEP_RELEASES": "3"}, tmp_path)
    assert (settings.log_keep, settings.keep_releases) == (7, 3)


def test_settings_file_in_dokuen_home(tmp_path: Path) -> None:
    write_settings_file(tmp_path, "DOKUEN_LOG_KEEP=9\n")
    assert load_settings({"DOKUEN_HOME": str(tmp_path)}).log_keep == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("DOKUEN_LOG_KEPP=2\n", "unknown setting 'DOKUEN_LOG_KEPP'", id="typo"),
        pytest.param("PATH=/bin\n", "unknown setting 'PATH'", id="not-a-setting"),
        pytest.param("DOKUEN_LOG_KEEP\n", "DOKUEN_LOG_KEEP='' is not a number", id="no-value"),
        pytest.param("DOKUEN_LOG_KEEP=two\n", "DOKUEN_LOG_KEEP='two' is not a number", id="bad"),
        pytest.param(
            "DOKUEN_PORT_RANGE=80-90\n", "DOKUEN_PORT_RANGE='80-90' must satisfy", id="bad-range"
        ),
    ],
)
def test_bad_settings_file(tmp_path: Path, text: str, message: str) -> None:
    write_settings_file(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings({}, tmp_path)
    assert message in str(info.value)


def test_unknown_setting_names_the_file_and_the_known_ones(tmp_path: Path) -> None:
    path = write_settings_file(tmp_path, "DOKUEN_LOG_KEEP=1\nDOKUEN_NOPE=1\n")
    with pytest.raises(SettingsError) as info:
        load_settings({"DOKUEN_NOPE": "ignored in the environment"}, tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: unknown setting 'DOKUEN_NOPE' (known: ")
    assert "DOKUEN_LOG_KEEP" in message
    assert "DOKUEN_PORT_RANGE" in message


def test_settings_file_directory_is_ignored(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).mkdir()
    assert load_settings({}, tmp_path) == Settings(home=tmp_path, socket=tmp_path / "dokuend.sock")


@pytest.mark.parametrize(
    ("environ", "home", "expected_home", "expected_socket"),
    [
        pytest.param({}, "given", "given", "given/dokuend.sock", id="given-home"),
        pytest.param(
            {"DOKUEN_HOME": "env"}, "given", "given", "given/dokuend.sock", id="given-beats-env"
        ),
        pytest.param({"DOKUEN_HOME": "env"}, None, "env", "env/dokuend.sock", id="env-home"),
        pytest.param(
            {"DOKUEN_HOME": "env", "DOKUEN_SOCKET": "/run/d.sock"},
            None,
            "env",
            "/run/d.sock",
            id="socket-override",
        ),
        pytest.param(
            {"DOKUEN_HOME": "env", "DOKUEN_SOCKET": ""},
            None,
            "env",
            "env/dokuend.sock",
            id="empty-socket-is-unset",
        ),
    ],
)
def test_home_and_socket(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str],
    home: str | None,
    expected_home: str,
    expected_socket: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # relative homes are made absolute against the cwd
    got_home, got_socket = home_and_socket(environ, None if home is None else Path(home))
    assert got_home == tmp_path / expected_home
    assert got_socket == tmp_path / expected_socket


@pytest.mark.parametrize(
    ("euid", "environ", "expected"),
    [
        pytest.param(0, {"XDG_DATA_HOME": "/xdg"}, "/var/lib/dokuen", id="root"),
        pytest.param(1000, {"XDG_DATA_HOME": "/xdg"}, "/xdg/dokuen", id="user-xdg"),
        pytest.param(1000, {}, "HOME/.local/share/dokuen", id="user-default"),
        pytest.param(1000, {"XDG_DATA_HOME": ""}, "HOME/.local/share/dokuen", id="user-empty-xdg"),
    ],
)
def test_default_home(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    euid: int,
    environ: dict[str, str],
    expected: str,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_home(environ) == Path(expected.replace("HOME", str(tmp_path)))


def test_backup_target_and_aws_variables_from_file_and_environment(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text(
        "DOKUEN_BACKUP_URL=s3://backups/dokuen\n"
        "DOKUEN_BACKUP_ENDPOINT_URL=http://127.0.0.1:9000\n"
        "AWS_ACCESS_KEY_ID=from-file\n"
        "AWS_SECRET_ACCESS_KEY=very-secret\n"
    )
    settings = load_settings({"AWS_ACCESS_KEY_ID": "from-env", "AWS_PROFILE": "x"}, tmp_path)
    assert settings.backup_url == "s3://backups/dokuen"
    assert settings.backup_environ == {
        "AWS_ACCESS_KEY_ID": "from-env",
        "AWS_SECRET_ACCESS_KEY": "very-secret",
        "DOKUEN_BACKUP_ENDPOINT_URL": "http://127.0.0.1:9000",
    }
    assert "very-secret" not in repr(settings)
    assert load_settings({}, tmp_path / "none").backup_url is None


def test_a_backup_endpoint_must_be_a_url(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="is not a URL like https://s3"):
        load_settings({"DOKUEN_BACKUP_ENDPOINT_URL": "minio:9000"}, tmp_path)


def test_builds_as_dokuends_own_user(tmp_path: Path) -> None:
    assert load_settings({"DOKUEN_BUILD_UIDS": "off"}, tmp_path).build_uids == "off"
    assert not load_settings({"DOKUEN_BUILD_UIDS": "off"}, tmp_path).isolated_builds
