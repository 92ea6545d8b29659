"""ssh: who may push and run commands over ssh. The authorized_keys file dokuend owns
(keys.py), what a key's forced command may run (command.py) and ask of dokuend (scope.py),
and the ssh-keys requests.

May import: the core only.
"""

__all__ = ["command", "keys", "requests", "scope"]
DEPENDS_ON: tuple[str, ...] = ()
