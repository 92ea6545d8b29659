"""The buildpack API as data: buildpack references, .buildpacks files, bin/release output."""

from pathlib import Path

import pytest

from dokuen.deploy.buildpack import (
    BuildError,
    ReleaseInfo,
    Source,
    build_environment,
    merge_release,
    parse_buildpacks_file,
    parse_release,
    parse_source,
)
from dokuen.errors import DokuenError


@pytest.mark.parametrize(
    ("text", "bundled", "local", "git"),
    [
        ("python", True, None, ("python", None)),
        ("/srv/buildpacks/go", False, Path("/srv/buildpacks/go"), ("/srv/buildpacks/go", None)),
        (
            "https://github.com/heroku/heroku-buildpack-go",
            False,
            None,
            ("https://github.com/heroku/heroku-buildpack-go", None),
        ),
        (
            "https://example.com/bp.git#v1.2",
            False,
            None,
            ("https://example.com/bp.git", "v1.2"),
        ),
        ("git@example.com:me/bp.git", False, None, ("git@example.com:me/bp.git", None)),
        ("file:///srv/bp.git", False, None, ("file:///srv/bp.git", None)),
    ],
)
def test_buildpack_sources(
    text: str, bundled: bool, local: Path | None, git: tuple[str, str | None]
) -> None:
    source = parse_source(f"  {text}\n", "BUILDPACK_URL")
    assert (source.text, source.bundled, source.local, source.git) == (text, bundled, local, git)


@pytest.mark.parametrize(
    "text",
    [
        "-oProxyCommand=touch /tmp/pwned",  # a git option, not a URL
        "--upload-pack=evil",
        "relative/dir",
        "ruby",  # not bundled, not a path
        "https://example.com/bp.git#--evil",
        "https://example.com/a b",
        "/srv/with\ttab",
        "",
    ],
)
def test_refused_buildpack_sources(text: str) -> None:
    with pytest.raises(DokuenError, match=r"^BUILDPACK_URL: .* is not a buildpack \(use one of"):
        parse_source(text, "BUILDPACK_URL")


def test_a_buildpacks_file_skips_blanks_and_comments_and_names_bad_lines() -> None:
    text = "# first the runtime\nnode\n\n  /srv/bp/extra  \n"
    assert parse_buildpacks_file(text) == [Source("node"), Source("/srv/bp/extra")]
    with pytest.raises(DokuenError, match=r"^\.buildpacks:2: 'nope' is not a buildpack"):
        parse_buildpacks_file("python\nnope\n")
    with pytest.raises(DokuenError, match="names no buildpack"):
        parse_buildpacks_file("# nothing\n\n")


def test_release_output_is_yaml_with_process_types_and_config_defaults() -> None:
    text = (
        "---\naddons: []\ndefault_process_types:\n  web: python3 -m http.server $PORT\n"
        "config_vars:\n  WEB_CONCURRENCY: 2\n  DEBUG: false\n"
    )
    assert parse_release(text, "bin/release") == ReleaseInfo(
        {"web": "python3 -m http.server $PORT"}, {"WEB_CONCURRENCY": "2", "DEBUG": "False"}
    )
    assert parse_release("", "bin/release") == ReleaseInfo()
    assert parse_release("---\n", "bin/release") == ReleaseInfo()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("web: [unclosed", "its output is not YAML"),
        ("- a list\n", "expected a YAML mapping, got list"),
        ("default_process_types: [web]\n", "default_process_types: expected a mapping"),
        ("default_process_types:\n  'web worker': x\n", "bad default process type"),
        ("default_process_types:\n  web: ''\n", "bad default process type"),
        ("config_vars:\n  1BAD: x\n", "bin/release: "),
        ("config_vars:\n  KEY: {nested: 1}\n", "expected names mapped to text"),
    ],
)
def test_bad_release_output_names_the_buildpack(text: str, message: str) -> None:
    with pytest.raises(BuildError, match=r"^buildpack x: bin/release") as caught:
        parse_release(text, "buildpack x: bin/release")
    assert message in str(caught.value)


def test_later_buildpacks_win() -> None:
    first = ReleaseInfo({"web": "a", "worker": "w"}, {"A": "1"})
    second = ReleaseInfo({"web": "b"}, {"A": "2", "B": "3"})
    assert merge_release([first, second]) == ReleaseInfo(
        {"web": "b", "worker": "w"}, {"A": "2", "B": "3"}
    )


def test_the_build_environment_holds_only_what_the_api_names() -> None:
    env = build_environment("/usr/bin:/bin", Path("/b/home"), None)
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/b/home",
        "STACK": "dokuen-1",
        "SOURCE_VERSION": "",
    }
    assert build_environment("/bin", Path("/h"), None, "/opt/uv")["DOKUEN_UV"] == "/opt/uv"
    assert build_environment("/bin", Path("/h"), "ab" * 20)["SOURCE_VERSION"] == "ab" * 20


def test_a_git_urls_password_is_never_shown() -> None:
    source = parse_source("https://ci:t0ken@git.example.com/bp.git#v2", "BUILDPACK_URL")
    assert source.shown == "https://ci:***@git.example.com/bp.git#v2"
    assert source.git == ("https://ci:t0ken@git.example.com/bp.git", "v2")
    assert parse_source("/srv/bp", "x").shown == "/srv/bp"
