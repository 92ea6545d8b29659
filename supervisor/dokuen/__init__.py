"""Dokuen: Heroku's developer experience on one machine you own."""

# The one place the version is written (pyproject.toml reads it from here); a literal,
# because asking importlib.metadata costs dokuenctl 30 ms at every start.
__version__ = "0.1.0"
