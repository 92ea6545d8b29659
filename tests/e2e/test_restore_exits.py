"""A restart of dokuend with many apps whose processes exit the moment they start: the
restore spawns them in worker threads while others end, and each exit reaches its slot
(it backs off and restarts, then stays crashed), never lost to another slot's reaping."""

from pathlib import Path

from tests.e2e.conftest import Dokuen, wait_for, write_app

APPS = 6
QUICK = 4  # `quick` processes per app: 24 that exit at once, with 6 web processes running


def test_processes_that_exit_during_the_restore_are_seen_to_exit(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    source = write_app(apps_dir / "src", "web: exec sleep 1000\nquick: exit 3\n")
    names = [f"app{n}" for n in range(APPS)]
    for name in names:
        dokuen.ctl("apps:create", name)
        dokuen.ctl("config:set", name, "DOKUEN_RESTART_LIMIT=2")
        dokuen.ctl("deploy", name, str(source))
        dokuen.ctl("ps:scale", name, f"quick={QUICK}")
    assert dokuen.terminate() == 0
    dokuen.start()  # every app restored at once, its spawns in threads

    def settled() -> bool:
        rows = dokuen.ps()
        quick = [row for row in rows if row["name"].startswith("quick.")]
        web = [row for row in rows if row["name"].startswith("web.")]
        return (
            len(quick) == APPS * QUICK
            and all(row["state"] == "crashed" for row in quick)
            and len(web) == APPS
            and all(row["state"] == "running" for row in web)
        )

    wait_for(settled, "every quick process crashed, every web process running", 60)
    log = dokuen.log()
    assert "No such process" not in log  # main said: broken, not restored: cannot start
    assert "broken" not in log  # app3 quick.1: [Errno 3] No such process (5 apps of 6)
    assert "internal error" not in log
    assert "internal error" not in dokuen.daemon_stderr()
