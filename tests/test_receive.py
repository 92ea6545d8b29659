"""What a push does, the pure part: the hook's input, the deploy branch, the plan."""

import pytest

from dokuen.deploy.receive import (
    Plan,
    RefUpdate,
    deploy_ref,
    deploy_refs,
    parse_updates,
    plan_push,
)
from dokuen.errors import ProtocolError, Refused

ZERO = "0" * 40
A = "a" * 40
B = "b" * 40


def test_parse_updates() -> None:
    text = f"{ZERO} {A} refs/heads/main\n{A} {B} refs/heads/feature\n"
    assert parse_updates(text) == [
        RefUpdate(ZERO, A, "refs/heads/main"),
        RefUpdate(A, B, "refs/heads/feature"),
    ]
    assert parse_updates("") == []
    assert RefUpdate(ZERO, A, "refs/heads/main").created
    assert RefUpdate(A, ZERO, "refs/heads/main").deleted
    assert parse_updates(f"{ZERO} {'c' * 64} refs/heads/main") == [
        RefUpdate(ZERO, "c" * 64, "refs/heads/main")
    ]


@pytest.mark.parametrize(
    "line",
    [f"{A} refs/heads/main", f"{A} {B}", f"{A} --upload-pack=x refs/heads/main", f"{A} {B} a b"],
)
def test_parse_updates_refuses_what_git_never_writes(line: str) -> None:
    with pytest.raises(ProtocolError, match="is not 'OLD NEW REF'"):
        parse_updates(line)


@pytest.mark.parametrize(
    ("config", "ref"),
    [
        ({}, "refs/heads/main"),
        ({"DEPLOY_BRANCH": ""}, "refs/heads/main"),
        ({"DEPLOY_BRANCH": "production"}, "refs/heads/production"),
        ({"DEPLOY_BRANCH": "release/2026"}, "refs/heads/release/2026"),
        ({"DEPLOY_BRANCH": "refs/heads/live"}, "refs/heads/live"),
    ],
)
def test_deploy_ref(config: dict[str, str], ref: str) -> None:
    assert deploy_ref(config) == ref


def test_plan_deploys_the_deploy_branch_and_notes_the_others() -> None:
    main = RefUpdate(A, B, "refs/heads/main")
    feature = RefUpdate(ZERO, A, "refs/heads/feature")
    tag = RefUpdate(ZERO, A, "refs/tags/v1")
    assert plan_push([feature, main, tag], ("refs/heads/main",)) == Plan(
        main,
        (
            "-----> Pushed to feature; only main deploys (set DEPLOY_BRANCH to change it)",
            "-----> Pushed to refs/tags/v1; only main deploys (set DEPLOY_BRANCH to change it)",
        ),
    )
    assert plan_push([main], ("refs/heads/production",)) == Plan(
        None,
        ("-----> Pushed to main; only production deploys (set DEPLOY_BRANCH to change it)",),
    )


def test_plan_refuses_to_delete_the_deploy_branch() -> None:
    with pytest.raises(Refused, match=r"^refusing to delete main, the branch this app deploys"):
        plan_push([RefUpdate(A, ZERO, "refs/heads/main")], DEFAULT)
    # Another branch may go.
    gone = RefUpdate(A, ZERO, "refs/heads/feature")
    assert plan_push([gone], DEFAULT) == Plan(None, ("-----> Deleted feature",))


DEFAULT = deploy_refs({})


def test_master_deploys_as_well_as_main_unless_deploy_branch_says_otherwise() -> None:
    assert DEFAULT == ("refs/heads/main", "refs/heads/master")
    assert deploy_refs({"DEPLOY_BRANCH": "production"}) == ("refs/heads/production",)
    master = RefUpdate(A, B, "refs/heads/master")
    assert plan_push([master], DEFAULT) == Plan(master, ())
    assert plan_push([master], deploy_refs({"DEPLOY_BRANCH": "main"})).deploy is None


def test_renaming_master_to_main_in_one_push_deploys_main() -> None:
    main = RefUpdate(ZERO, B, "refs/heads/main")
    gone = RefUpdate(A, ZERO, "refs/heads/master")
    assert plan_push([main, gone], DEFAULT) == Plan(main, ("-----> Deleted master",))


def test_pushing_main_and_master_at_once_deploys_the_last() -> None:
    main = RefUpdate(A, B, "refs/heads/main")
    master = RefUpdate(A, B, "refs/heads/master")
    plan = plan_push([main, master], DEFAULT)
    assert plan == Plan(master, ("-----> Pushed to main; master deploys",))
