"""An app's environment on its way past root. A process that becomes an app's uid starts as
root (a shell that enters its cgroup, then setpriv), and root's dynamic loader, libc and
shell obey variables the app chooses (its config, its ``.env``): ``LD_PRELOAD`` would load
the app's library as root, ``MEMUSAGE_OUTPUT`` has glibc's libmemusage write a file of
root's choosing, ``GCONV_PATH`` and ``LOCPATH`` read modules and locales from the app's
files. So root's steps get ``ROOT_ENVIRONMENT`` and the app's variables under other names
(``DOKUEN_CARRIED_NAME``); the first program run as the app's uid, ``RESTORE``, gives them
their names back and runs the process. Values never go through argv (other users read it
in /proc) and are never parsed by a shell.
"""

import os
import re
from collections.abc import Mapping

PREFIX = "DOKUEN_CARRIED_"
SCRIPT = "DOKUEN_CARRIED"  # what RESTORE evaluates: the renaming, made here
ROOT_ENVIRONMENT = {"PATH": os.defpath}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESTORE = f'eval "${SCRIPT}"; exec "$@"'  # run as the app's uid, before anything else
# Linux refuses an environment string longer than 32 pages (MAX_ARG_STRLEN, 128 KiB) with
# E2BIG: a renaming of a thousand variables is longer, so it is cut into parts of at most
# this size, each in a variable of its own (DOKUEN_CARRIED_0...: no carrier's name, as a
# shell name never starts with a digit) that the script evaluates in turn.
PART = 100_000


def carry(env: Mapping[str, str], argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """What root's steps run after they drop to the app's uid, and the environment they
    run with: ``argv`` behind ``RESTORE``, and ``env`` renamed. A name no shell can export
    (never a config key: names.py refuses it; a ``.env`` may have one) is left out, as the
    ``/bin/sh -c`` that runs every command (dash) leaves it out anyway."""
    # Shorter names first: a name that is another's carrier (DOKUEN_CARRIED_X beside X)
    # is only set once X has its value. Every name is a checked shell name, and each value
    # is only ever expanded in double quotes.
    names = sorted((name for name in env if _NAME.fullmatch(name)), key=len)
    script = [f"unset {name}" for name in ROOT_ENVIRONMENT if name not in names]
    script += [f'export {name}="${PREFIX}{name}"; unset {PREFIX}{name}' for name in names]
    renamed = {f"{PREFIX}{name}": env[name] for name in names}
    parts: list[list[str]] = [[]]
    size = 0
    for step in script:
        if size + len(step) > PART and parts[-1]:
            parts.append([])
            size = 0
        parts[-1].append(step)
        size += len(step) + 2
    # Each part unsets itself first (its text is already expanded): the app's own
    # DOKUEN_CARRIED_0, if it has one, is set by a part, after.
    cut = {
        f"{PREFIX}{number}": "; ".join([f"unset {PREFIX}{number}", *part])
        for number, part in enumerate(parts)
    }
    steps = [f"unset {SCRIPT}"] + [f'eval "${name}"' for name in cut]
    return (
        ["/bin/sh", "-c", RESTORE, "dokuen-env", *argv],
        {**ROOT_ENVIRONMENT, **renamed, **cut, SCRIPT: "; ".join(steps)},
    )
