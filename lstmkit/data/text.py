"""Reading a text corpus from a file: UTF-8 or a clear error, never a silent guess."""

from __future__ import annotations

import os
from pathlib import Path


class CorpusError(ValueError):
    """A corpus that cannot be used: missing, empty, binary, not UTF-8, too short, tampered with."""


def _binary(source: str) -> CorpusError:
    return CorpusError(f"{source}: the corpus looks binary (it contains NUL bytes); expected UTF-8 text")


def check_text(text: str, source: str) -> str:
    """`text` unless it is empty or looks binary (NUL characters), which raise CorpusError."""
    if not text:
        raise CorpusError(f"{source}: the corpus is empty")
    if "\x00" in text:
        raise _binary(source)
    return text


def decode_text(data: bytes, source: str) -> str:
    """Decode UTF-8 bytes (a leading BOM is dropped) and `check_text` them; anything else raises
    CorpusError."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if b"\x00" in data:  # binary: say so, rather than which byte is not UTF-8
            raise _binary(source) from None
        raise CorpusError(
            f"{source}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start} cannot be decoded); "
            "convert the file to UTF-8 first") from None
    # Windows line ends would make '\r' a symbol of its own; text mode would drop it too.
    return check_text(text.replace("\r\n", "\n"), source)


def read_text_file(path: str | os.PathLike) -> str:
    """The whole of a UTF-8 text file, checked (see `decode_text`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--text: no file at {str(path)!r}")
    if not path.is_file():
        raise CorpusError(f"--text: {str(path)!r} is not a regular file")
    return decode_text(path.read_bytes(), str(path))
