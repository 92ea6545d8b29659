"""Whether an app's own files can be read. One bad file (formation.json, domains, the
``current`` pointer, the env dir, the current release's record) marks that app broken,
with the file and the fix, and nothing else: every other app is restored and runs."""

from dokuen.deploy import releases
from dokuen.errors import DokuenError, explain
from dokuen.names import check_domain
from dokuen.store import AppDir
from dokuen.supervise.envdir import read_envdir


def state_problem(directory: AppDir) -> str | None:
    """The first of the app's files that cannot be read, as one line naming the file and the
    fix; None when all of them read. Blocking file I/O (a handful of small files)."""
    name = directory.name
    if not directory.root.is_dir():
        return (
            f"{directory.root} is missing (restore it from a backup, or remove the app: "
            f"dokuenctl apps:destroy {name} --confirm {name})"
        )
    then = f"then run: dokuenctl start {name}"
    rollback = f"run: dokuenctl rollback {name} vN"
    checks = (
        (directory.formation_file, directory.read_formation, f"fix or delete the file, {then}"),
        (directory.domains_file, lambda: _check_domains(directory), f"fix the line, {then}"),
        (directory.env, lambda: read_envdir(directory.env), f"fix the env dir, {then}"),
        (directory.current, lambda: _check_current(directory), rollback),
    )
    for path, check, fix in checks:
        try:
            check()
        except (DokuenError, OSError) as exc:
            problem = explain(exc)
            where = "" if str(path) in problem else f"{path}: "
            return f"{where}{problem}; {fix}"
    return None


def shown_formation(directory: AppDir) -> dict[str, int]:
    """The formation, or none when its file is bad (``state_problem`` says why)."""
    try:
        return directory.read_formation()
    except (DokuenError, OSError):
        return {}


def _check_domains(directory: AppDir) -> None:
    for domain in directory.read_domains():
        check_domain(domain)


def _check_current(directory: AppDir) -> None:
    """The ``current`` pointer names a release whose record reads (none yet is fine)."""
    if not directory.current.is_symlink() and not directory.current.exists():
        return  # never deployed
    release = releases.current_release(directory)
    if release is None or not release.path.is_dir():
        raise DokuenError("does not point at a release")
    release.procfile()
