"""Export a Pipfile.lock or a poetry.lock as a requirements file of pinned versions, so uv
(or pip) installs exactly the locked set without pipenv's or poetry's own resolver.

    python export_lock.py pipenv|poetry BUILD_DIR   -> requirements on stdout

Only the packages the app runs with: Pipfile.lock's "default" section; poetry.lock's
packages of the main group (its "groups" lists, poetry 2's lock format), or those
reachable from the main dependencies in pyproject.toml (older lock formats). Hashes are
kept when every package has them (then uv checks them all). A problem exits 2 with one
line naming the file and the fix. Standard library only (tomllib: Python 3.11 or newer).
"""

import json
import re
import sys
from pathlib import Path
from typing import Any


class Unusable(Exception):
    pass


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _lines(entries: list[tuple[str, list[str]]]) -> str:
    hashed = bool(entries) and all(hashes for _, hashes in entries)
    out = []
    for spec, hashes in entries:
        out.append(spec + ("".join(f" --hash={h}" for h in hashes) if hashed else ""))
    return "".join(line + "\n" for line in out)


def pipenv(build_dir: Path) -> str:
    lock = build_dir / "Pipfile.lock"
    if not lock.is_file():
        raise Unusable(
            "Pipfile has no Pipfile.lock beside it: run `pipenv lock` and commit Pipfile.lock"
        )
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
        default = data["default"]
        assert isinstance(default, dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise Unusable(
            "Pipfile.lock is not a pipenv lock (no 'default' section): run `pipenv lock` again"
        ) from None
    entries = []
    for name, info in sorted(default.items()):
        if not isinstance(info, dict):
            raise Unusable(f"Pipfile.lock: the entry {name!r} is not a table: run `pipenv lock`")
        extras = f"[{','.join(info['extras'])}]" if info.get("extras") else ""
        markers = f" ; {info['markers']}" if info.get("markers") else ""
        if "git" in info:
            ref = info.get("ref") or ""
            spec = f"{name}{extras} @ git+{info['git']}{'@' + ref if ref else ''}{markers}"
        elif "path" in info or "file" in info:
            where = info.get("path") or info.get("file")
            spec = f"{'-e ' if info.get('editable') else ''}{where}"
        elif isinstance(info.get("version"), str) and info["version"].startswith("=="):
            spec = f"{name}{extras}{info['version']}{markers}"
        else:
            raise Unusable(
                f"Pipfile.lock: {name} has no pinned version: run `pipenv lock` and commit it"
            )
        entries.append((spec, list(info.get("hashes") or [])))
    return _lines(entries)


def _toml(path: Path) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415 (3.11+, only here)

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Unusable(f"{path.name} cannot be read: {exc}") from None


def _main_names(project: dict[str, Any]) -> set[str]:
    names = set()
    for spec in project.get("project", {}).get("dependencies", []) or []:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
        if match:
            names.add(_name(match[1]))
    poetry = project.get("tool", {}).get("poetry", {})
    for key in poetry.get("dependencies", {}) or {}:
        if key.lower() != "python":
            names.add(_name(key))
    return names


def poetry(build_dir: Path) -> str:
    lock = build_dir / "poetry.lock"
    data = _toml(lock)
    project = (
        _toml(build_dir / "pyproject.toml") if (build_dir / "pyproject.toml").is_file() else {}
    )
    packages = {_name(p["name"]): p for p in data.get("package", []) if "name" in p}
    if any("groups" in p for p in packages.values()):
        wanted = {n for n, p in packages.items() if "main" in (p.get("groups") or [])}
    elif any("category" in p for p in packages.values()):
        wanted = {n for n, p in packages.items() if p.get("category", "main") == "main"}
    else:  # lock format 2.0: walk the graph from the main dependencies
        wanted, todo = set(), sorted(_main_names(project))
        while todo:
            name = todo.pop()
            if name in wanted:
                continue
            if name not in packages:
                raise Unusable(
                    f"poetry.lock has no entry for {name}, which pyproject.toml needs: run "
                    "`poetry lock` and commit poetry.lock"
                )
            wanted.add(name)
            todo.extend(_name(dep) for dep in (packages[name].get("dependencies") or {}))
    missing = _main_names(project) - set(packages)
    if missing:
        raise Unusable(
            f"poetry.lock has no entry for {', '.join(sorted(missing))}, which pyproject.toml "
            "needs: run `poetry lock` and commit poetry.lock"
        )
    entries = []
    for name in sorted(wanted):
        package = packages[name]
        source = package.get("source") or {}
        markers = package.get("markers")
        if isinstance(markers, dict):  # per group: the main group's
            markers = markers.get("main")
        suffix = f" ; {markers}" if isinstance(markers, str) and markers else ""
        if source.get("type") == "git":
            ref = source.get("resolved_reference") or source.get("reference") or ""
            spec = f"{package['name']} @ git+{source['url']}{'@' + ref if ref else ''}{suffix}"
            hashes: list[str] = []
        elif source.get("type") in ("directory", "file"):
            spec = f"{'-e ' if package.get('develop') else ''}{source['url']}"
            hashes = []
        else:
            spec = f"{package['name']}=={package['version']}{suffix}"
            hashes = [f["hash"] for f in package.get("files") or [] if "hash" in f]
        entries.append((spec, hashes))
    return _lines(entries)


def main() -> int:
    kind, build_dir = sys.argv[1], Path(sys.argv[2])
    try:
        sys.stdout.write(pipenv(build_dir) if kind == "pipenv" else poetry(build_dir))
    except Unusable as exc:
        print(exc, file=sys.stderr)
        return 2
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # a shape it cannot read
        lock = "Pipfile.lock" if kind == "pipenv" else "poetry.lock"
        print(
            f"{lock} is not in a form this buildpack reads ({type(exc).__name__}: {exc}): "
            f"lock again ({'pipenv lock' if kind == 'pipenv' else 'poetry lock'}) and commit it",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
