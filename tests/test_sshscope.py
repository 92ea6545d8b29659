"""What an ssh key may ask of dokuend: a table of requests, for an admin key and a key
limited to some apps."""

import re
from typing import Any

import pytest

from dokuen.errors import Refused
from dokuen.ssh.scope import APP_REQUESTS, NOT_OVER_SSH, KeyScope, check_request

ADMIN = KeyScope("laptop")
CI = KeyScope("ci", ("blog", "notes"))
CI_IS = "ssh key 'ci' (apps: blog, notes)"


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("apps", {}),
        ("status", {}),
        ("ps", {"app": None}),
        ("logs", {"app": None, "lines": 100}),
        ("ssh-keys", {}),
        ("ssh-keys:add", {"name": "x", "key": "ssh-ed25519 AAAA"}),
        ("apps:destroy", {"app": "shop", "confirm": "shop"}),
        ("git:repo", {"app": "shop", "create": True}),
        ("backups:capture-repo", {"app": None, "all": True}),
        ("backups:restore", {"app": "blog", "source": "shop"}),
        ("run", {"app": "shop", "line": "id"}),
    ],
)
def test_an_admin_key_may_make_every_request(command: str, args: dict[str, Any]) -> None:
    check_request(ADMIN, command, args)


@pytest.mark.parametrize("scope", [ADMIN, CI], ids=["admin", "scoped"])
@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("deploy", "deploy APP DIR is not available over ssh (it reads DIR on the server); "),
        ("pg:connection", "pg:psql is not available over ssh: psql's \\! and \\copy"),
        ("certs:add", "certs:add is not available over ssh (it reads CERT and KEY on the server)"),
    ],
)
def test_no_key_may_deploy_a_server_directory_or_run_psql(
    scope: KeyScope, command: str, message: str
) -> None:
    with pytest.raises(Refused, match="^" + re.escape(message)):
        check_request(scope, command, {"app": "blog", "dir": "/etc"})


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("git:repo", {"app": "blog", "create": True, "key": "ci"}),
        ("apps:create", {"app": "notes"}),
        ("ps", {"app": "blog"}),
        ("logs", {"app": "blog", "ps": "web.1", "follow": True}),
        ("config:set", {"app": "blog", "values": {"A": "1"}}),
        ("run", {"app": "notes", "line": "env"}),
        ("certs:auto", {"app": "blog", "on": True}),
        ("certs:redirect", {"app": "notes", "on": True}),
        ("releases:output", {"app": "blog", "release": "v1"}),
        ("pg:info", {"app": "blog"}),
        ("backups:download", {"app": "blog", "id": None}),
        ("backups:restore", {"app": "blog", "source": "notes"}),
        ("backups:capture-repo", {"app": "blog", "all": False}),
        ("ssh:audit", {"key": "ci", "line": "dokuenctl apps", "allowed": False}),
    ],
)
def test_a_scoped_key_may_make_requests_on_its_apps(command: str, args: dict[str, Any]) -> None:
    check_request(CI, command, args)


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("apps", {}, f"{CI_IS} may only use commands that name one of its apps; dokuenctl apps "),
        ("status", {}, f"{CI_IS} may only use commands that name one of its apps; dokuenctl st"),
        ("ssh-keys", {}, "dokuenctl ssh-keys is for admin keys"),
        ("ssh-keys:add", {"name": "x", "key": "k"}, "dokuenctl ssh-keys:add is for admin keys"),
        ("ssh-keys:remove", {"name": "ci"}, "dokuenctl ssh-keys:remove is for admin keys"),
        ("apps:destroy", {"app": "blog"}, "dokuenctl apps:destroy is for admin keys"),
        ("ps", {"app": None}, f"{CI_IS} may only use commands that name one of its apps (dok"),
        ("logs", {"app": None}, f"{CI_IS} may only use commands that name one of its apps (dok"),
        ("ps", {"app": "shop"}, f"{CI_IS} may not use app 'shop'"),
        ("config", {"app": "shop"}, f"{CI_IS} may not use app 'shop'"),
        ("apps:create", {"app": "shop"}, f"{CI_IS} may not use app 'shop'"),
        ("git:repo", {"app": "shop", "create": True}, f"{CI_IS} may not push to app 'shop'"),
        ("backups", {"app": "shop"}, f"{CI_IS} may not use app 'shop'"),
        ("backups:restore", {"app": "blog", "source": "shop"}, "may not use app 'shop'"),
        ("backups:capture-repo", {"app": None, "all": True}, "--all is for admin keys"),
        ("logs", {"app": "nginx"}, f"{CI_IS} may not use app 'nginx'"),
        ("logs", {"app": ["blog"]}, "may only use commands that name one of its apps"),
        ("service:install", {}, "dokuenctl service:install is for admin keys"),
        ("some:new-request", {"app": "blog"}, "dokuenctl some:new-request is for admin keys"),
        # today's requests: the export's (a slug holds the app's files, and the spec its
        # config) are for admin keys even for the key's own app; certs only of its apps
        ("export:spec", {"app": "blog"}, "dokuenctl export:spec is for admin keys"),
        ("export:slug", {"app": "blog"}, "dokuenctl export:slug is for admin keys"),
        ("export:slug", {"app": "shop", "release": "v1"}, "export:slug is for admin keys"),
        ("certs", {"app": "shop"}, f"{CI_IS} may not use app 'shop'"),
        ("certs:backup", {"app": "shop"}, f"{CI_IS} may not use app 'shop'"),
        ("certs:restore", {"app": "shop", "id": None}, f"{CI_IS} may not use app 'shop'"),
        ("certs:remove", {"app": "shop"}, f"{CI_IS} may not use app 'shop'"),
        ("certs:auto", {"app": "shop", "on": True}, f"{CI_IS} may not use app 'shop'"),
        ("daemon:reload", {}, "dokuenctl daemon:reload is for admin keys"),
    ],
)
def test_a_scoped_key_is_refused_the_rest_naming_the_key_and_its_apps(
    command: str, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(Refused, match=re.escape(message)):
        check_request(CI, command, args)


def test_the_requests_a_scoped_key_may_make_all_name_an_app() -> None:
    assert not APP_REQUESTS & {"apps", "status", "ssh-keys", "ssh-keys:add", "apps:destroy"}
    assert not APP_REQUESTS & set(NOT_OVER_SSH)


@pytest.mark.parametrize(
    ("command", "args", "key"),
    [
        ("config:set", {"app": "blog", "values": {"DOKUEN_PROCESS_LIMIT": "4194304"}}, "PROCESS"),
        ("config:set", {"app": "blog", "values": {"A": "", "DOKUEN_MEMORY_LIMIT": "1T"}}, "MEMORY"),
        ("config:unset", {"app": "notes", "keys": ["A", "DOKUEN_PROCESS_LIMIT"]}, "PROCESS"),
        ("config:unset", {"app": "blog", "keys": ("DOKUEN_MEMORY_LIMIT",)}, "MEMORY"),
    ],
)
def test_a_scoped_key_may_not_change_its_apps_limits(
    command: str, args: dict[str, Any], key: str
) -> None:
    with pytest.raises(Refused, match=f"^{re.escape(CI_IS)} may not change DOKUEN_{key}_LIMIT: "):
        check_request(CI, command, args)
    check_request(ADMIN, command, args)  # an admin key holds the app in, and lets it out


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("config:set", {"app": "blog", "values": {"DOKUEN_STOP_TIMEOUT": "5"}}),
        ("config:set", {"app": "blog", "values": {"dokuen_process_limit": "1"}}),  # not it
        ("config:unset", {"app": "blog", "keys": ["DOKUEN_HEALTHCHECK_PATH"]}),
        ("config:get", {"app": "blog", "key": "DOKUEN_PROCESS_LIMIT"}),  # reading is fine
    ],
)
def test_a_scoped_key_may_still_set_its_apps_other_options(
    command: str, args: dict[str, Any]
) -> None:
    check_request(CI, command, args)
