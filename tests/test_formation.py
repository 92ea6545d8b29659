"""Table tests for formations: defaults across deploys, ps:scale arguments, expansion."""

import pytest

from dokuen.errors import InvalidName
from dokuen.supervise.formation import (
    MAX_SCALE,
    ProcessSpec,
    default_formation,
    expand,
    in_procfile_order,
    parse_scale,
    procfile_order,
)
from dokuen.supervise.procfile import Procfile


def procfile(*types: str) -> Procfile:
    return Procfile(tuple((name, f"run-{name}") for name in types))


WEB_WORKER = procfile("web", "worker")
WITH_RELEASE = procfile("release", "web", "worker")


@pytest.mark.parametrize(
    ("types", "previous", "expected"),
    [
        pytest.param(("web",), {}, {"web": 1}, id="first-deploy"),
        pytest.param(("web", "worker"), {}, {"web": 1, "worker": 1}, id="every-type-gets-1"),
        pytest.param(("web", "worker"), {"web": 3}, {"web": 3, "worker": 1}, id="new-type-gets-1"),
        pytest.param(("web",), {"web": 0}, {"web": 0}, id="scaled-to-zero-stays-zero"),
        pytest.param(("web",), {"web": 2, "worker": 4}, {"web": 2}, id="removed-type-dropped"),
        pytest.param(("release", "web"), {}, {"web": 1}, id="release-never-runs"),
        pytest.param(("release", "web"), {"release": 2}, {"web": 1}, id="release-never-kept"),
        pytest.param(("release",), {}, {}, id="only-release"),
    ],
)
def test_default_formation(
    types: tuple[str, ...], previous: dict[str, int], expected: dict[str, int]
) -> None:
    formation = default_formation(procfile(*types), previous)
    assert formation == expected
    assert list(formation) == [t for t in types if t in expected]  # Procfile order


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["web=2"], {"web": 2}),
        (["web=0"], {"web": 0}),
        (["web=3", "worker=0"], {"web": 3, "worker": 0}),
        (["web=1", "web=4"], {"web": 4}),
        ([f"web={MAX_SCALE}"], {"web": MAX_SCALE}),
        (["web=007"], {"web": 7}),
    ],
)
def test_parse_scale(args: list[str], expected: dict[str, int]) -> None:
    assert parse_scale(args, WITH_RELEASE) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([], "nothing to scale", id="empty"),
        pytest.param(["web"], "invalid scale 'web' (use TYPE=N", id="no-equals"),
        pytest.param(["=2"], "invalid scale '=2'", id="no-type"),
        pytest.param(["web=1\n"], "invalid scale", id="trailing-newline"),
        pytest.param(
            ["clock=1"],
            "unknown process type 'clock' (the Procfile has: web, worker)",
            id="unknown-type-lists-known",
        ),
        pytest.param(["web worker=1"], "invalid process type 'web worker'", id="bad-type"),
        pytest.param(
            ["release=1"], "'release' runs once per deploy and cannot be scaled", id="release"
        ),
        pytest.param(["web=-1"], "invalid count '-1' for 'web'", id="negative"),
        pytest.param(["web=abc"], "invalid count 'abc' for 'web'", id="not-a-number"),
        pytest.param(["web=²"], "invalid count '²' for 'web'", id="superscript-digit"),
        pytest.param(["web=\u0661"], "invalid count '\u0661' for 'web'", id="arabic-digit"),
        pytest.param(["web=1.5"], "invalid count '1.5'", id="fraction"),
        pytest.param(["web= 1"], "invalid count ' 1'", id="space"),
        pytest.param(["web="], "invalid count ''", id="empty-count"),
        pytest.param(
            [f"web={MAX_SCALE + 1}"],
            f"invalid count '{MAX_SCALE + 1}' for 'web' (use a number from 0 to {MAX_SCALE})",
            id="over-max",
        ),
        pytest.param(["web=99999999999"], "invalid count", id="huge"),
        pytest.param(["web=2", "worker=x"], "invalid count 'x' for 'worker'", id="second-bad"),
    ],
)
def test_parse_scale_errors(args: list[str], message: str) -> None:
    with pytest.raises(InvalidName) as info:
        parse_scale(args, WITH_RELEASE)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("args", "current", "expected"),
    [
        pytest.param(["web+1"], {"web": 2}, {"web": 3}, id="plus"),
        pytest.param(["web-1"], {"web": 2}, {"web": 1}, id="minus"),
        pytest.param(["worker+2"], {"web": 2}, {"worker": 2}, id="from-nothing"),
        pytest.param(["web=1", "web+2"], {"web": 5}, {"web": 3}, id="after-an-earlier-arg"),
        pytest.param(["web-0"], {"web": 2}, {"web": 2}, id="no-change"),
    ],
)
def test_parse_scale_relative(
    args: list[str], current: dict[str, int], expected: dict[str, int]
) -> None:
    assert parse_scale(args, WITH_RELEASE, current) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["web-3"], "invalid count 'web-3': 'web' would have -1 processes"),
        ([f"web+{MAX_SCALE}"], f"invalid count 'web+{MAX_SCALE}': 'web' would have"),
        (["web+x"], "invalid count 'x' for 'web'"),
        (["web+"], "invalid count '' for 'web'"),
    ],
)
def test_parse_scale_relative_errors(args: list[str], message: str) -> None:
    with pytest.raises(InvalidName) as info:
        parse_scale(args, WITH_RELEASE, {"web": 2})
    assert str(info.value).startswith(message)


def test_formations_and_processes_are_listed_in_procfile_order() -> None:
    clock_first = procfile("clock", "web", "worker")
    shown = in_procfile_order({"worker": 1, "web": 2, "gone": 1, "clock": 0}, clock_first)
    assert list(shown.items()) == [("clock", 0), ("web", 2), ("worker", 1), ("gone", 1)]
    specs = expand("blog", clock_first, {"worker": 1, "web": 2, "clock": 1})
    mixed = [specs[3], specs[1], specs[0], specs[2]]
    key = procfile_order(clock_first.types)
    assert [s.name for s in sorted(mixed, key=key)] == ["clock.1", "web.1", "web.2", "worker.1"]
    assert [s.name for s in sorted(mixed, key=procfile_order(()))] == [
        "clock.1",
        "web.1",
        "web.2",
        "worker.1",
    ]


def test_parse_scale_release_missing_from_procfile_is_unknown() -> None:
    with pytest.raises(InvalidName, match=r"^unknown process type 'release'"):
        parse_scale(["release=1"], WEB_WORKER)


@pytest.mark.parametrize(
    ("formation", "names"),
    [
        pytest.param({}, [], id="empty"),
        pytest.param({"web": 1}, ["web.1"], id="one"),
        pytest.param({"web": 0, "worker": 2}, ["worker.1", "worker.2"], id="zero-skipped"),
        pytest.param(
            {"worker": 1, "web": 2},
            ["web.1", "web.2", "worker.1"],
            id="procfile-order-not-formation-order",
        ),
        pytest.param({"web": 1, "clock": 3}, ["web.1"], id="type-not-in-procfile-ignored"),
    ],
)
def test_expand(formation: dict[str, int], names: list[str]) -> None:
    specs = expand("blog", WITH_RELEASE, formation)
    assert [spec.name for spec in specs] == names
    for spec in specs:
        assert spec.app == "blog"
        assert spec.command == f"run-{spec.type}"
        assert spec.name == f"{spec.type}.{spec.index}"


def test_expand_specs() -> None:
    assert expand("blog", WEB_WORKER, {"web": 2, "worker": 1}) == [
        ProcessSpec("blog", "web", 1, "run-web"),
        ProcessSpec("blog", "web", 2, "run-web"),
        ProcessSpec("blog", "worker", 1, "run-worker"),
    ]
