"""What a terminal is shown of text that apps control: a table of inputs and what prints."""

import pytest

from dokuen.cli.terminal import one_line, printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("hello, world", "hello, world"),
        ("tab\tand\nnewline\n", "tab\tand\nnewline\n"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("\x1b]0;pwned\x07title", "\\x1b]0;pwned\\x07title"),  # OSC: set the window title
        ("\x1b[2J", "\\x1b[2J"),  # clear the screen
        ("bar\rfoo", "bar\\x0dfoo"),  # overwrite what the line showed
        ("back\x08space", "back\\x08space"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f", "del\\x7f"),
        ("\x9b31mC1 CSI\x9d", "\\x9b31mC1 CSI\\x9d"),  # one-byte CSI and OSC
        ("\x80\x9f", "\\x80\\x9f"),
        ("\u202egnp.exe", "\\u202egnp.exe"),  # right-to-left override
        ("\u202a\u202b\u202c\u202d", "\\u202a\\u202b\\u202c\\u202d"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),  # isolates
        ("line\u2028sep\u2029para", "line\\u2028sep\\u2029para"),
        ("[bold]x[/bold] [/bold]", "[bold]x[/bold] [/bold]"),  # rich's business, not ours
        ("café ☕ 日本 \u00a0nbsp \u200bzwsp", "café ☕ 日本 \u00a0nbsp \u200bzwsp"),
        ("a\\x1b stays", "a\\x1b stays"),
        ("", ""),
    ],
)
def test_printable_escapes_controls_and_keeps_text_tabs_and_newlines(text: str, shown: str) -> None:
    assert printable(text) == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("web.1", "web.1"),
        ("two\nlines", "two\\x0alines"),
        ("a\tb", "a\\x09b"),
        ("\x1b[5;31m\u202e", "\\x1b[5;31m\\u202e"),
    ],
)
def test_one_line_escapes_tabs_and_newlines_too(text: str, shown: str) -> None:
    assert one_line(text) == shown


def test_no_character_it_lets_through_is_a_control_or_a_bidi_override() -> None:
    everything = "".join(chr(code) for code in range(0x3000))
    for shown in (printable(everything), one_line(everything)):
        for char in shown:
            code = ord(char)
            assert char in "\t\n" or not (
                code < 0x20
                or 0x7F <= code <= 0x9F
                or 0x202A <= code <= 0x202E
                or 0x2066 <= code <= 0x2069
                or code in (0x2028, 0x2029)
            ), hex(code)
    assert "\t" not in one_line(everything)
    assert "\n" not in one_line(everything)


def test_an_error_message_is_printed_made_safe(capsys: pytest.CaptureFixture[str]) -> None:
    from dokuen.cli.dokuenctl import fail  # noqa: PLC0415

    with pytest.raises(SystemExit) as exited:
        fail("release failed: \x1b]0;pwned\x07\u202egnp.exe\nsecond line")
    assert exited.value.code == 1
    assert capsys.readouterr().err == (
        "error: release failed: \\x1b]0;pwned\\x07\\u202egnp.exe\nsecond line\n"
    )
