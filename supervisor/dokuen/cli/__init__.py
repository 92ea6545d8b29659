"""The command-line edges: ``dokuend`` (the daemon) and ``dokuenctl`` (the client)."""
