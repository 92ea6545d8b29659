"""The uids of a home and its apps (isolate/identity.py): the block choice, its registry and
the allocation of app uids, against real files in a temporary registry."""

from pathlib import Path

import pytest

from dokuen.errors import Conflict, SettingsError
from dokuen.isolate import identity
from dokuen.isolate.identity import (
    APPS_PER_BLOCK,
    BLOCK_SIZE,
    BLOCKS,
    FIRST_UID,
    AppIdentity,
    UidBlock,
    allocate,
    claim_block,
    identity_of,
    preferred_block,
    probe_order,
    read_identity,
    write_identity,
)


def test_blocks_lie_between_the_old_build_uids_and_two_to_the_31() -> None:
    assert UidBlock(0).first == FIRST_UID > 2100065535  # Dokuen 0.1's DOKUEN_BUILD_UIDS
    assert UidBlock(BLOCKS - 1).last < 2**31
    assert UidBlock(1).first == UidBlock(0).last + 1 == FIRST_UID + BLOCK_SIZE
    assert UidBlock(3).first in UidBlock(3)
    assert UidBlock(3).last not in UidBlock(2)


def test_the_preferred_block_comes_from_the_path_and_probing_visits_each_once() -> None:
    home = Path("/var/lib/dokuen")
    assert preferred_block(home) == preferred_block(Path("/var/lib/dokuen"))
    assert 0 <= preferred_block(home) < BLOCKS
    assert preferred_block(Path("/srv/a")) != preferred_block(Path("/srv/b"))
    order = list(probe_order(home, 10))
    assert order[0] == preferred_block(home, 10)
    assert sorted(order) == list(range(10))


@pytest.mark.parametrize(
    ("serial", "uid", "build_uid"),
    [(0, FIRST_UID, FIRST_UID + 1), (1, FIRST_UID + 2, FIRST_UID + 3)],
)
def test_each_app_gets_two_uids_and_its_gid_is_its_uid(
    serial: int, uid: int, build_uid: int
) -> None:
    assert identity_of(UidBlock(0), serial) == AppIdentity(serial, uid, uid, build_uid)


def test_a_block_runs_out_with_a_clear_error() -> None:
    assert identity_of(UidBlock(0), APPS_PER_BLOCK - 1).build_uid == UidBlock(0).last
    with pytest.raises(Conflict, match="has given out all its 32768 app uids"):
        identity_of(UidBlock(0), APPS_PER_BLOCK)


def test_two_homes_claim_different_blocks_and_keep_them(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    # With only 2 blocks both homes may prefer the same one: the second must probe on.
    first = claim_block(one, registry, blocks=2)
    second = claim_block(two, registry, blocks=2)
    assert first != second
    assert claim_block(one, registry, blocks=2) == first  # recorded in the home
    assert (registry / str(first.index)).read_text() == f"{one}\n"
    assert (one / "uid-block").read_text() == f"{first.index}\n"
    three = tmp_path / "three"
    three.mkdir()
    with pytest.raises(Conflict, match="every uid block"):
        claim_block(three, registry, blocks=2)


def test_the_block_of_a_home_that_is_gone_is_taken_over(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    gone, new = tmp_path / "gone", tmp_path / "new"
    gone.mkdir()
    new.mkdir()
    claim_block(gone, registry, blocks=1)
    (gone / "uid-block").unlink()
    gone.rmdir()
    assert claim_block(new, registry, blocks=1) == UidBlock(0)
    assert (registry / "0").read_text() == f"{new}\n"


def test_a_copied_home_is_refused_its_twins_block(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    copy.mkdir()
    block = claim_block(original, registry, blocks=4)
    (copy / "uid-block").write_text((original / "uid-block").read_text())
    with pytest.raises(SettingsError, match=f"names uid block {block.index}, which {original}"):
        claim_block(copy, registry, blocks=4)


def test_app_uids_are_never_given_twice_even_after_a_destroy(tmp_path: Path) -> None:
    block = UidBlock(5)
    blog = allocate(tmp_path, block, "blog")
    shop = allocate(tmp_path, block, "shop")
    assert (blog.serial, shop.serial) == (0, 1)
    assert len({blog.uid, blog.build_uid, shop.uid, shop.build_uid}) == 4
    # The records stay when an app is destroyed: a new "blog" is a new user.
    again = allocate(tmp_path, block, "blog")
    assert again.serial == 2
    assert again.uid not in (blog.uid, shop.uid)
    assert (tmp_path / "uids" / "0").read_text() == "blog\n"


def test_an_identity_file_reads_back_and_garbage_reads_as_none(tmp_path: Path) -> None:
    file = tmp_path / "identity"
    assert read_identity(file) is None
    mine = identity_of(UidBlock(2), 7)
    write_identity(file, mine)
    assert read_identity(file) == mine
    assert file.stat().st_mode & 0o777 == 0o600
    file.write_text('{"uid": "x"}')
    assert read_identity(file) is None
    assert Path("/var/lib/dokuen-uid-blocks") == identity.REGISTRY
