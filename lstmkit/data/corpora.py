"""Named text corpora: one embedded in Python itself, others downloaded once and verified.

`pydoc` needs no network and no file: it is the English help text that ships inside every
CPython (`pydoc_data.topics.topics`, joined in sorted-key order; its size differs between
Python versions). `timemachine` and `tinyshakespeare` are fetched on first use into a cache
directory (`$LSTMKIT_CACHE`, else `$XDG_CACHE_HOME/lstmkit`, else `~/.cache/lstmkit`), and their
SHA-256 is checked before the file is kept or used; a cached copy is re-checked on every load.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lstmkit.data.text import CorpusError, check_text, decode_text
from lstmkit.utils.checkpoint import atomic_write_bytes


@dataclass(frozen=True)
class RemoteCorpus:
    url: str
    sha256: str
    size: int  # bytes
    description: str


REMOTE: dict[str, RemoteCorpus] = {
    "timemachine": RemoteCorpus(
        "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",
        "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516", 178_979,
        "H. G. Wells, The Time Machine: the file the d2l book uses for its character LM"),
    "tinyshakespeare": RemoteCorpus(
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", 1_115_394,
        "Karpathy's char-rnn Tiny Shakespeare"),
}
DOWNLOAD_TIMEOUT = 60.0  # seconds a stalled download waits for the server before it is given up
EMBEDDED = ("pydoc",)
NAMES = (*EMBEDDED, *REMOTE)
DEFAULT = "pydoc"


def pydoc_topics() -> str:
    """CPython's help topics (`pydoc_data.topics.topics`) joined in sorted-key order."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # some distributions strip pydoc_data
        raise CorpusError(f"corpus 'pydoc': this Python has no pydoc_data ({e}); pass --text PATH") from None
    return check_text("".join(topics[k] for k in sorted(topics)), "corpus 'pydoc'")


def cache_dir() -> Path:
    if os.environ.get("LSTMKIT_CACHE"):
        return Path(os.environ["LSTMKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lstmkit"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(name: str, data: bytes, source: str, remedy: str) -> bytes:
    """`data` if it is exactly the named corpus, else CorpusError naming both checksums and `remedy`."""
    spec = REMOTE[name]
    digest = sha256_hex(data)
    if digest != spec.sha256:
        raise CorpusError(
            f"corpus {name!r}: {source} has sha256 {digest} ({len(data):,} bytes), expected "
            f"{spec.sha256} ({spec.size:,} bytes); {remedy}, or pass --text PATH")
    return data


def fetch(name: str, directory: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The path of the verified cached copy of a remote corpus, downloading it if needed."""
    return _fetch(name, directory, download)[0]


def _fetch(name: str, directory: str | os.PathLike | None, download: bool) -> tuple[Path, bytes]:
    """`fetch`, with the bytes it verified: whoever reads the corpus next need not hash it again."""
    if name not in REMOTE:
        embedded = " (embedded: read it with load_corpus)" if name in EMBEDDED else ""
        raise ValueError(f"corpus: expected one of {list(REMOTE)}, got {name!r}{embedded}")
    spec = REMOTE[name]
    path = Path(directory or cache_dir()) / f"{name}.txt"
    if path.is_file():  # checked on every load: a cached copy can change after it was kept
        return path, verify(name, path.read_bytes(), str(path), "delete it and retry")
    if not download:
        raise CorpusError(f"corpus {name!r}: not in the cache ({path}) and downloading is off")
    try:
        with urllib.request.urlopen(spec.url, timeout=DOWNLOAD_TIMEOUT) as response:
            data = response.read()
    # HTTPException: a body cut short (IncompleteRead) or a garbled status line, which are no OSError
    except (OSError, http.client.HTTPException) as e:
        raise CorpusError(f"corpus {name!r}: cannot download {spec.url} ({e}); "
                          f"put a copy at {path} or pass --text PATH") from None
    # only a verified file is kept: a failed download leaves nothing to delete
    atomic_write_bytes(path, verify(name, data, spec.url, "nothing was kept; retry"))
    return path, data


def load_corpus(name: str, directory: str | os.PathLike | None = None, *, download: bool = True) -> str:
    """The text of a named corpus (see the module docstring)."""
    if name == "pydoc":
        return pydoc_topics()
    if name not in REMOTE:
        raise ValueError(f"corpus: expected one of {list(NAMES)}, got {name!r}")
    return decode_text(_fetch(name, directory, download)[1], f"corpus {name!r}")
