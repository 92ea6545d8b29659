"""Table tests for the DOKUEN_* app config vars that change how processes are treated."""

import pytest

from dokuen.errors import SettingsError
from dokuen.options import AppOptions, app_options
from dokuen.restart import RestartPolicy

DEFAULT_STOP = 10.0


def test_defaults() -> None:
    assert app_options({}, DEFAULT_STOP) == AppOptions(DEFAULT_STOP, RestartPolicy())
    assert app_options({"OTHER": "x"}, 2.5) == AppOptions(2.5, RestartPolicy())


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
    assert app_options(config, DEFAULT_STOP) == AppOptions(1.5, RestartPolicy(limit=None))
