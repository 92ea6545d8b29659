"""The pure parts of making a release: whole lines out of pieces, and process types."""

from pathlib import Path

import anyio
import pytest

from dokuen.deploy.slug import Transcript, process_types
from dokuen.errors import DokuenError


def test_a_transcript_passes_on_whole_lines_and_keeps_everything() -> None:
    said: list[str] = []

    async def say(line: str) -> None:
        said.append(line)

    async def main() -> Transcript:
        transcript = Transcript(say)
        for piece in ["-----> Ins", "talling\n       a\n       b", "c\r50%\r100%"]:
            await transcript.write(piece)
        assert said == ["-----> Installing", "       a"]
        await transcript.end_line()
        await transcript.end_line()  # nothing more to end
        transcript.keep(" !     failed\n")
        return transcript

    transcript = anyio.run(main)
    assert said == ["-----> Installing", "       a", "       bc\r50%\r100%"]
    assert transcript.text == ("-----> Installing\n       a\n       bc\r50%\r100%\n !     failed\n")


def test_the_procfile_wins_and_buildpack_types_fill_in(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: ./serve\n")
    types = process_types(tmp_path, {"web": "npm start", "worker": "node worker.js"})
    assert types.commands == (("web", "./serve"), ("worker", "node worker.js"))
    (tmp_path / "Procfile").unlink()
    assert process_types(tmp_path, {"web": "npm start"}).commands == (("web", "npm start"),)
    with pytest.raises(DokuenError, match="declares no process types: add a Procfile"):
        process_types(tmp_path, {})


def test_a_transcript_cuts_endless_lines_and_caps_the_log() -> None:
    said: list[str] = []

    async def say(line: str) -> None:
        said.append(line)

    async def main() -> Transcript:
        transcript = Transcript(say)
        for _ in range(200):  # 12.8 MiB without a newline
            await transcript.write("a" * (64 << 10))
        await transcript.end_line()
        return transcript

    transcript = anyio.run(main)
    assert len(said) == 200
    assert {len(line) for line in said} == {Transcript.LINE_LIMIT}
    assert transcript.text.endswith("\n[the build log stops here: it is cut at 8 MiB]\n")
    assert len(transcript.text) < Transcript.LOG_LIMIT + 100
