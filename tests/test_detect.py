"""The bundled buildpacks' bin/detect and the table dokuend decides with (BUNDLED_DETECT)
give the same answer for every app: each case runs the real script too."""

import subprocess
from pathlib import Path

import pytest

from dokuen.deploy.build import Job, Limits, _bundled_choice
from dokuen.deploy.buildpack import (
    BUNDLED,
    BUNDLED_AS_DATA,
    BUNDLED_DETECT,
    build_environment,
    detect_bundled,
    parse_release,
)
from dokuen.errors import UnsafeFile
from dokuen.resources import shipped

CASES = [
    (),
    ("requirements.txt",),
    ("Pipfile",),
    ("Pipfile.lock",),
    ("pyproject.toml", "poetry.lock"),
    ("pyproject.toml", "uv.lock"),
    ("setup.py",),
    ("setup.cfg",),
    ("package.json",),
    ("package.json", "requirements.txt"),
    ("index.html",),
    ("index.html", "Procfile"),
    ("Procfile",),
    ("Procfile", "package.json"),
    ("README.md", "app.py"),
]


@pytest.mark.parametrize("files", CASES, ids=lambda files: "+".join(files) or "empty")
def test_the_table_answers_as_each_bin_detect_does(tmp_path: Path, files: tuple[str, ...]) -> None:
    for name in files:
        (tmp_path / name).write_text("x\n")
    for pack in BUNDLED:
        script = shipped("buildpacks") / pack / "bin" / "detect"
        done = subprocess.run(
            [str(script), str(tmp_path)], capture_output=True, text=True, check=False
        )
        expected = done.stdout.strip() if done.returncode == 0 else ""
        assert detect_bundled(pack, tmp_path) == expected, (pack, files)


def test_a_directory_or_a_dangling_link_is_not_a_marker_file(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").mkdir()
    (tmp_path / "package.json").symlink_to("nowhere")
    (tmp_path / "Procfile").symlink_to("real-procfile")
    (tmp_path / "real-procfile").write_text("web: x\n")
    assert detect_bundled("python", tmp_path) == ""
    assert detect_bundled("node", tmp_path) == ""
    assert detect_bundled("procfile", tmp_path) == "Procfile"  # a link followed, as -f does


@pytest.mark.parametrize("exists", [True, False], ids=["target there", "target missing"])
def test_a_marker_file_linked_out_of_the_app_is_refused_whether_or_not_it_exists(
    tmp_path: Path, exists: bool
) -> None:
    """dokuend decides as root: following the link would tell a push whether a root-only
    path exists (the python buildpack detected, or not). The same line either way."""
    app, secret = tmp_path / "app", tmp_path / "root-only" / "key"
    app.mkdir()
    if exists:
        secret.parent.mkdir(mode=0o700)
        secret.write_text("x\n")
    (app / "requirements.txt").symlink_to(secret)
    with pytest.raises(UnsafeFile) as refused:
        detect_bundled("python", app)
    assert str(refused.value) == (
        f"requirements.txt is a symbolic link (to {secret}); commit the file itself"
    )


def test_every_bundled_buildpack_has_a_row() -> None:
    assert set(BUNDLED_DETECT) == set(BUNDLED)


@pytest.mark.parametrize("pack", sorted(BUNDLED_AS_DATA))
def test_a_buildpack_taken_as_data_says_what_its_scripts_say(tmp_path: Path, pack: str) -> None:
    """A build with it runs neither bin/compile nor bin/release: the table must say what
    they would, for an app it detects, byte for byte."""
    app, cache, env_dir = tmp_path / "app", tmp_path / "cache", tmp_path / "env"
    for directory in (app, cache, env_dir):
        directory.mkdir()
    (app / BUNDLED_DETECT[pack][1][0]).write_text("web: ./serve\n")
    env = build_environment("/usr/bin:/bin", tmp_path, None)
    scripts = shipped("buildpacks") / pack / "bin"
    compiled = subprocess.run(
        [str(scripts / "compile"), str(app), str(cache), str(env_dir)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    released = subprocess.run(
        [str(scripts / "release"), str(app)], capture_output=True, text=True, env=env, check=True
    )
    said, info = BUNDLED_AS_DATA[pack]
    assert compiled.stdout + compiled.stderr == said
    assert parse_release(released.stdout, pack) == info
    assert sorted(path.name for path in app.iterdir()) == [BUNDLED_DETECT[pack][1][0]]


@pytest.mark.parametrize(
    ("names", "config", "taken"),
    [
        ((), {}, True),  # a Procfile alone: the procfile buildpack, as data
        ((".buildpacks",), {}, False),  # the app names its buildpacks: they run
        ((), {"BUILDPACK_URL": "https://example.test/bp.git"}, False),
        (("dangling-link:.buildpacks",), {}, False),  # a link is there: the app named some
    ],
)
def test_buildpacks_the_app_names_are_never_skipped_for_bundled_data(
    tmp_path: Path, names: tuple[str, ...], config: dict[str, str], taken: bool
) -> None:
    """A Procfile is the procfile buildpack's detect; `.buildpacks` or BUILDPACK_URL still
    decide first, whatever the source holds, so no bin/compile an app asked for is left out."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "Procfile").write_text("web: ./serve\n")
    for name in names:
        if name.startswith("dangling-link:"):
            (app / name.split(":", 1)[1]).symlink_to(tmp_path / "nowhere")
        else:
            (app / name).write_text("https://example.test/bp.git\n")
    job = Job(
        "blog", app, tmp_path / "c", tmp_path / "w", config, None, "/usr/bin:/bin",
        Limits(60, 512, 64), shipped("buildpacks"),
    )  # fmt: skip
    chosen = _bundled_choice(job)
    assert (chosen is not None and chosen.source.text in BUNDLED_AS_DATA) is taken
