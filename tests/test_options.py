"""Table tests for the DOKUEN_* app config vars that change how processes are treated."""

import pytest

from dokuen.apps.options import AppOptions, app_options
from dokuen.errors import SettingsError
from dokuen.supervise.health import HealthCheck
from dokuen.supervise.restart import RestartPolicy

DEFAULT_STOP = 10.0


def test_defaults() -> None:
    assert app_options({}, DEFAULT_STOP) == AppOptions(DEFAULT_STOP, RestartPolicy(), TCP_60)
    assert app_options({"OTHER": "x"}, 2.5) == AppOptions(2.5, RestartPolicy(), TCP_60)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0.05", 0.05),
        ("2.5", 2.5),
        ("30", 30.0),
        (" 30 ", 30.0),
        ("1e3", 1000.0),
        ("3600", 3600.0),
    ],
)
def test_stop_timeout(text: str, seconds: float) -> None:
    options = app_options({"DOKUEN_STOP_TIMEOUT": text}, DEFAULT_STOP)
    assert options.stop_timeout == seconds
    assert options.policy == RestartPolicy()


@pytest.mark.parametrize(
    "text", ["", "soon", "10s", "-1", "-0.001", "3600.5", "3601", "1e9", "nan", "inf", "-inf"]
)
def test_stop_timeout_errors(text: str) -> None:
    with pytest.raises(SettingsError) as info:
        app_options({"DOKUEN_STOP_TIMEOUT": text}, DEFAULT_STOP)
    assert str(info.value) == (
        f"DOKUEN_STOP_TIMEOUT={text!r} is not a number of seconds from 0 to 3600"
    )


@pytest.mark.parametrize(
    ("text", "limit"),
    [("forever", None), ("always", None), ("0", None), ("1", 1), ("3", 3), (" 25 ", 25)],
)
def test_restart_limit(text: str, limit: int | None) -> None:
    options = app_options({"DOKUEN_RESTART_LIMIT": text}, DEFAULT_STOP)
    assert options.policy == RestartPolicy(limit=limit)
    assert options.stop_timeout == DEFAULT_STOP


@pytest.mark.parametrize("text", ["", "never", "-1", "2.5"])
def test_restart_limit_errors(text: str) -> None:
    with pytest.raises(SettingsError, match=r"^DOKUEN_RESTART_LIMIT="):
        app_options({"DOKUEN_RESTART_LIMIT": text}, DEFAULT_STOP)


def test_both() -> None:
    config = {"DOKUEN_STOP_TIMEOUT": "1.5", "DOKUEN_RESTART_LIMIT": "forever", "WEB": "x"}
    assert app_options(config, DEFAULT_STOP) == AppOptions(1.5, RestartPolicy(limit=None), TCP_60)


TCP_60 = HealthCheck(None, 60.0)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"DOKUEN_HEALTHCHECK_PATH": "/health"}, HealthCheck("/health", 60.0)),
        ({"DOKUEN_BOOT_TIMEOUT": "2.5"}, HealthCheck(None, 2.5)),
        (
            {"DOKUEN_HEALTHCHECK_PATH": "/up?full=1", "DOKUEN_BOOT_TIMEOUT": "5"},
            HealthCheck("/up?full=1", 5.0),
        ),
    ],
)
def test_health_options(config: dict[str, str], expected: HealthCheck) -> None:
    assert app_options(config, DEFAULT_STOP).health == expected


@pytest.mark.parametrize(
    "config",
    [
        {"DOKUEN_HEALTHCHECK_PATH": "health"},
        {"DOKUEN_HEALTHCHECK_PATH": "/a b"},
        {"DOKUEN_HEALTHCHECK_PATH": "/x\r\nHost: evil"},
        {"DOKUEN_BOOT_TIMEOUT": "0"},
        {"DOKUEN_BOOT_TIMEOUT": "soon"},
        {"DOKUEN_BOOT_TIMEOUT": "nan"},
    ],
)
def test_bad_health_options_are_refused(config: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=r"DOKUEN_(HEALTHCHECK_PATH|BOOT_TIMEOUT)="):
        app_options(config, DEFAULT_STOP)
