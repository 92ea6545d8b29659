"""Table tests for the grammars of names users give us."""

import pytest

from dokuen.errors import InvalidName, NotFound
from dokuen.names import (
    check_app_name,
    check_config_key,
    check_new_app_name,
    check_process_type,
    check_ssh_key_name,
    not_found,
    parse_process_name,
)


@pytest.mark.parametrize(
    "name",
    [
        "blog",
        "a",
        "my-app2",
        "a-b-c",
        "x1",
        "a" * 63,
        "a" + "-" * 61 + "z",
    ],
)
def test_check_app_name_accepts(name: str) -> None:
    assert check_app_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("../x", id="path"),
        pytest.param("a/b", id="slash"),
        pytest.param("Blog", id="uppercase"),
        pytest.param("a b", id="space"),
        pytest.param("a_b", id="underscore"),
        pytest.param("a.b", id="dot"),
        pytest.param("a" * 64, id="64-chars"),
        pytest.param("a" * 70, id="70-chars"),
        pytest.param("blog\n", id="trailing-newline"),
        pytest.param("\nblog", id="leading-newline"),
        pytest.param("-x", id="leading-dash"),
        pytest.param("x-", id="trailing-dash"),
        pytest.param("1abc", id="leading-digit"),
        pytest.param("blög", id="non-ascii"),
        pytest.param("ｂlog", id="fullwidth"),  # noqa: RUF001
    ],
)
def test_check_app_name_refuses(name: str) -> None:
    with pytest.raises(InvalidName) as info:
        check_app_name(name)
    message = str(info.value)
    assert message.startswith(f"invalid app name {name!r} (")
    assert "lowercase letters" in message


@pytest.mark.parametrize("key", ["A", "_", "DATABASE_URL", "lower_case", "_X1", "a1"])
def test_check_config_key_accepts(key: str) -> None:
    assert check_config_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "1A", "A-B", "A B", "A=B", "A.B", "../A", "A\n", "É", "PATH\0"],
)
def test_check_config_key_refuses(key: str) -> None:
    with pytest.raises(InvalidName, match=r"^invalid config key "):
        check_config_key(key)


@pytest.mark.parametrize("name", ["web", "Web_2", "-x", "release"])
def test_check_process_type_accepts(name: str) -> None:
    assert check_process_type(name) == name


@pytest.mark.parametrize("name", ["", "web.1", "web worker", "web\n", "wéb"])
def test_check_process_type_refuses(name: str) -> None:
    with pytest.raises(InvalidName, match=r"^invalid process type "):
        check_process_type(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web", ("web", None)),
        ("web.1", ("web", 1)),
        ("web.2", ("web", 2)),
        ("web.10", ("web", 10)),
        ("my_worker-2.3", ("my_worker-2", 3)),
    ],
)
def test_parse_process_name(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_process_name(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "web.0", "web.01", "web.", ".1", "a b", "web.1.2", "web.-1", "web.x", "web.1\n", "web.²"],
)
def test_parse_process_name_refuses(text: str) -> None:
    with pytest.raises(InvalidName) as info:
        parse_process_name(text)
    assert str(info.value).startswith(f"invalid process name {text!r} (use TYPE or TYPE.N")


@pytest.mark.parametrize(
    ("kind", "name", "known", "message"),
    [
        ("app", "blgo", ["blog", "shop"], "no app named 'blgo'; did you mean 'blog'?"),
        ("app", "blog2", ["blog", "shop"], "no app named 'blog2'; did you mean 'blog'?"),
        ("app", "zzz", ["blog", "shop"], "no app named 'zzz'"),
        ("app", "blog", [], "no app named 'blog'"),
        (
            "process",
            "wbe.1",
            ["web.1", "worker.1"],
            "no process named 'wbe.1'; did you mean 'web.1'?",
        ),
    ],
)
def test_not_found(kind: str, name: str, known: list[str], message: str) -> None:
    error = not_found(kind, name, iter(known))
    assert isinstance(error, NotFound)
    assert str(error) == message


@pytest.mark.parametrize("name", ["alice", "alice@laptop", "ci-deploy.2", "7", "a_b", "a" * 64])
def test_check_ssh_key_name_accepts(name: str) -> None:
    assert check_ssh_key_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-alice", "@x", ".x", "a b", 'a"b', "a,b", "a\n", "a/b", "a" * 65, "é", "a;rm"],
)
def test_check_ssh_key_name_refuses(name: str) -> None:
    with pytest.raises(InvalidName, match=r"^invalid ssh key name "):
        check_ssh_key_name(name)


@pytest.mark.parametrize("name", ["dokuen", "nginx", "postgres", "root", "www"])
def test_the_platforms_own_names_are_reserved_for_new_apps(name: str) -> None:
    with pytest.raises(InvalidName, match=rf"^app name '{name}' is reserved for the platform"):
        check_new_app_name(name)
    assert check_app_name(name) == name  # an existing app of that name keeps working


def test_other_names_are_free() -> None:
    assert check_new_app_name("www2") == "www2"
    with pytest.raises(InvalidName, match="invalid app name"):
        check_new_app_name("Nope")
