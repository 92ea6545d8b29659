"""ssh: who may push and run commands over ssh. The authorized_keys file dokuend owns
(keys.py), what a key's forced command may run (command.py), and the ssh-keys requests.

May import: the core only.
"""

__all__ = ["command", "keys", "requests"]
DEPENDS_ON: tuple[str, ...] = ()
