"""What a terminal may be shown of text that apps control: log lines, process commands,
build output, config values, error messages.

A terminal obeys the control characters in what it prints: ESC starts sequences that
recolour, move the cursor, clear the screen, set the window title or (in some terminals)
write files; C1 controls are the same in one byte; bidi overrides and isolates turn
``txt.exe`` into what reads as another name; U+2028/U+2029 break lines that look whole.
So before such text reaches a terminal, every one of these becomes a visible escape
(``\\x1b``, ``\\u202e``) that shows what was there and does nothing. Pure functions only;
the callers decide when the output is a terminal (cli/console.py).
"""

# C0 controls and DEL, C1 controls, bidi embeddings/overrides/isolates, line and
# paragraph separators. Tab and newline are kept where text may span lines (``printable``).
_UNSAFE = [
    *range(0x00, 0x20),
    0x7F,
    *range(0x80, 0xA0),
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    0x2028,
    0x2029,
]


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_ESCAPE_ALL = {code: _escape(code) for code in _UNSAFE}
_ESCAPE_KEEPING_LINES = {
    code: text for code, text in _ESCAPE_ALL.items() if chr(code) not in "\t\n"
}


def printable(text: str) -> str:
    """``text`` with every control character but tab and newline made a visible escape:
    ``"\\x1b[2Jhi\\n"`` becomes ``"\\\\x1b[2Jhi\\n"``. Backslashes already in the text are
    left alone (what matters is that nothing acts, not that the escape can be undone)."""
    return text.translate(_ESCAPE_KEEPING_LINES)


def one_line(text: str) -> str:
    """Like ``printable``, but tab and newline are escaped too: for a table cell or any
    field that must stay on its line."""
    return text.translate(_ESCAPE_ALL)
