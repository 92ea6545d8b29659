"""Values go into service files only when they match a strict grammar: nothing is escaped."""

from pathlib import Path

import pytest

from dokuen.errors import ServiceError
from dokuen.service.template import check_path, check_search_path, render


@pytest.mark.parametrize(
    "path",
    [
        "/usr/local/bin/dokuend",
        "/opt/dokuen/.venv/bin/dokuend",
        "/home/ada/.local/pipx/venvs/dokuen/bin/dokuend",
        "/var/lib/dokuen",
        "/Users/ada/Library/Logs/dokuend.log",
        "/srv/app+tools/v1.2_3@x/bin",
    ],
)
def test_safe_paths_pass(path: str) -> None:
    assert check_path(Path(path), "dokuend") == path


@pytest.mark.parametrize(
    "path",
    [
        "bin/dokuend",  # relative
        "",
        "/Library/Application Support/Dokuen",  # a space splits ExecStart
        "/opt/50%/dokuend",  # % starts a systemd specifier
        "/opt/$HOME/dokuend",  # $ a variable, in both formats
        "/opt/a&b/dokuend",  # XML
        "/opt/<b>/dokuend",
        '/opt/"q"/dokuend',
        "/opt/dokuen\n/bin",
        "/opt/../etc/dokuend",
        "/opt/dokuen;rm",
    ],
)
def test_anything_else_is_refused_naming_the_value(path: str) -> None:
    with pytest.raises(ServiceError, match="cannot go into a service file"):
        check_path(path, "dokuend")


def test_a_search_path_is_safe_directories() -> None:
    assert check_search_path("/usr/bin:/bin") == "/usr/bin:/bin"
    with pytest.raises(ServiceError):
        check_search_path("/usr/bin::/bin")  # an empty entry is the current directory
    with pytest.raises(ServiceError):
        check_search_path("/usr/bin:.")


def test_render_fills_placeholders_and_keeps_doubled_dollars() -> None:
    assert render("ExecStart=$dokuend\nkill $$MAINPID", {"dokuend": "/d"}) == (
        "ExecStart=/d\nkill $MAINPID"
    )


def test_a_placeholder_without_a_value_is_an_error() -> None:
    with pytest.raises(ServiceError, match="no value"):
        render("ExecStart=$dokuend $missing", {"dokuend": "/d"})
