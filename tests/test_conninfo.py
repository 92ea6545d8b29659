"""Table tests for PostgreSQL connection info: URLs in, keywords, PG* variables and URLs out;
the password never shows in a repr or an error."""

import pytest
from psycopg.conninfo import conninfo_to_dict

from dokuen.conninfo import ConnInfo, parse_url
from dokuen.errors import SettingsError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgres://admin:s3cret@db.example:6432/main",
            ConnInfo("db.example", 6432, "admin", "main", "s3cret"),
        ),
        ("postgresql://admin@127.0.0.1", ConnInfo("127.0.0.1", 5432, "admin", "postgres")),
        (
            "postgres://ad%40min:p%2Fw%3Ad@[::1]:5433/my%20db?sslmode=require",
            ConnInfo("::1", 5433, "ad@min", "my db", "p/w:d", (("sslmode", "require"),)),
        ),
        (
            "postgres://admin:x@%2Fvar%2Frun%2Fpostgresql/postgres",
            ConnInfo("/var/run/postgresql", 5432, "admin", "postgres", "x"),
        ),
    ],
)
def test_parse_url(url: str, expected: ConnInfo) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://admin:hunter2@host/db", "must be a URL like postgres://"),
        ("postgres://hunter2@/db", "needs a user and a host"),
        ("postgres://admin:hunter2@host:port/db", "has a port that is not a number"),
        ("postgres://admin:hunter2@host/db?password=x", "unknown parameter 'password'"),
    ],
)
def test_bad_urls_are_named_without_their_password(url: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        parse_url(url)
    assert "hunter2" not in str(info.value)
    assert str(info.value).startswith("DOKUEN_POSTGRES_URL")


def test_what_goes_out() -> None:
    info = ConnInfo("127.0.0.1", 5433, "app_blog", "app_blog", "a/b:c@d", (("sslmode", "prefer"),))
    assert info.url() == "postgres://app_blog:a%2Fb%3Ac%40d@127.0.0.1:5433/app_blog?sslmode=prefer"
    assert parse_url(info.url()) == info
    assert info.shown() == "postgres://app_blog:****@127.0.0.1:5433/app_blog?sslmode=prefer"
    assert info.environ() == {
        "PGHOST": "127.0.0.1",
        "PGPORT": "5433",
        "PGUSER": "app_blog",
        "PGDATABASE": "app_blog",
        "PGPASSWORD": "a/b:c@d",
        "PGAPPNAME": "dokuen",
        "PGSSLMODE": "prefer",
    }
    assert info.keywords()["password"] == "a/b:c@d"
    assert "a/b:c@d" not in repr(info)


def test_another_login_on_the_same_server() -> None:
    admin = ConnInfo("/home/x/postgres/run", 5433, "dokuen", "postgres", "root-secret")
    app = admin.login("app_blog", "app-secret", "app_blog")
    assert (app.host, app.port, app.user, app.dbname, app.password) == (
        "/home/x/postgres/run",
        5433,
        "app_blog",
        "app_blog",
        "app-secret",
    )
    assert app.database("scratch").dbname == "scratch"
    no_password = ConnInfo("h", 1, "u", "d")
    assert "PGPASSWORD" not in no_password.environ()
    assert no_password.shown() == "postgres://u@h:1/d"
    assert ConnInfo("/run/pg", 5432, "u", "d").url() == "postgresql://u@/d?host=/run/pg&port=5432"


def test_a_unix_socket_goes_in_the_query_with_no_host_or_port_before_the_database() -> None:
    """The shape an app's DATABASE_URL has on the managed cluster: no TCP host at all."""
    info = ConnInfo(
        "/var/lib/dokuen/apps/blog/run/postgresql", 5433, "app_blog", "app_blog", "p@ss"
    )
    url = info.url()
    assert url == (
        "postgresql://app_blog:p%40ss@/app_blog"
        "?host=/var/lib/dokuen/apps/blog/run/postgresql&port=5433"
    )
    assert parse_url(url) == info
    assert info.shown() == url.replace(":p%40ss@", ":****@")
    # What libpq makes of it is what psycopg, psql and pg_dump use.
    assert conninfo_to_dict(url) == {
        "user": "app_blog",
        "password": "p@ss",
        "dbname": "app_blog",
        "host": "/var/lib/dokuen/apps/blog/run/postgresql",
        "port": "5433",
    }


@pytest.mark.parametrize(
    "url",
    [
        "postgres://admin:hunter2@db.example/db?host=/elsewhere",  # two hosts
        "postgres://admin:hunter2@/db?host=relative/dir",
        "postgres://admin:hunter2@/db?host=/dir&port=http",
    ],
)
def test_socket_parameters_only_where_they_say_one_thing(url: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_url(url)
    assert "hunter2" not in str(info.value)
