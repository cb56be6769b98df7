"""Corpus loading: UTF-8 or a clear error; named corpora verified by sha256, never downloaded here."""

import hashlib
import http.client
import io
from pathlib import Path

import pytest

from lstmkit.data import CorpusError, corpora, fetch, load_corpus, pydoc_topics, read_text_file

TIMEMACHINE = Path(__file__).resolve().parents[2].parent / "shared/data/timemachine/timemachine.txt"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("tests must not touch the network")
    monkeypatch.setattr(corpora.urllib.request, "urlopen", refuse)


@pytest.mark.parametrize("data, match", [
    (b"", "empty"),
    (b"abc\x00\x01\x02", "binary"),
    ("caf\xe9 cr\xe8me".encode("latin-1"), "not UTF-8"),
    (bytes(range(256)), "binary"),
])
def test_bad_files_raise_a_clear_error(tmp_path, data, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(CorpusError, match=match):
        read_text_file(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file"):
        read_text_file(tmp_path / "nope.txt")
    with pytest.raises(CorpusError, match="not a regular file"):
        read_text_file(tmp_path)


def test_utf8_with_bom_and_crlf(tmp_path):
    path = tmp_path / "ok.txt"
    path.write_bytes("\ufeffcafé\r\nline two\n".encode("utf-8"))
    assert read_text_file(path) == "café\nline two\n"


def test_pydoc_is_the_sorted_join_of_the_topics():
    from pydoc_data.topics import topics
    text = pydoc_topics()
    assert text == "".join(topics[k] for k in sorted(topics))
    assert len(text) == sum(len(v) for v in topics.values()) > 0
    assert load_corpus("pydoc") == text


def test_cached_copy_is_verified_before_use(tmp_path):
    if not TIMEMACHINE.is_file():
        pytest.skip(f"shared data absent: {TIMEMACHINE}")
    data = TIMEMACHINE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == corpora.REMOTE["timemachine"].sha256
    assert len(data) == corpora.REMOTE["timemachine"].size
    (tmp_path / "timemachine.txt").write_bytes(data)
    assert fetch("timemachine", tmp_path) == tmp_path / "timemachine.txt"
    assert load_corpus("timemachine", tmp_path) == data.decode()
    (tmp_path / "timemachine.txt").write_bytes(data[:-1] + b"!")  # tampered
    with pytest.raises(CorpusError, match="sha256"):
        load_corpus("timemachine", tmp_path)


def test_no_cached_copy_and_no_download(tmp_path):
    with pytest.raises(CorpusError, match="not in the cache"):
        fetch("tinyshakespeare", tmp_path, download=False)
    with pytest.raises(ValueError, match=r"expected one of \['timemachine', 'tinyshakespeare'\], got 'wikipedia'$"):
        fetch("wikipedia", tmp_path)
    with pytest.raises(ValueError, match=r"got 'pydoc' \(embedded: read it with load_corpus\)$"):
        fetch("pydoc", tmp_path)
    with pytest.raises(ValueError, match=r"expected one of \['pydoc', 'timemachine', 'tinyshakespeare'\]"):
        load_corpus("wikipedia", tmp_path)


def test_download_keeps_only_a_verified_file(tmp_path, monkeypatch):
    good = b"hello corpus\n"
    monkeypatch.setitem(corpora.REMOTE, "tiny", corpora.RemoteCorpus(
        "http://example.invalid/tiny.txt", hashlib.sha256(good).hexdigest(), len(good), "test"))
    served = {"data": b"tampered\n"}
    monkeypatch.setattr(corpora.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(served["data"]))
    with pytest.raises(CorpusError, match="sha256.*nothing was kept; retry, or pass --text"):
        fetch("tiny", tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing kept

    class CutShort(io.BytesIO):
        def read(self, n=-1):
            raise http.client.IncompleteRead(b"hel", len(good) - 3)
    monkeypatch.setattr(corpora.urllib.request, "urlopen", lambda url, timeout: CutShort())
    with pytest.raises(CorpusError, match=r"cannot download http://example.invalid/tiny.txt \(IncompleteRead.*--text PATH"):
        fetch("tiny", tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(corpora.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(served["data"]))
    served["data"] = good
    hashed = []
    monkeypatch.setattr(corpora, "sha256_hex", lambda data: hashed.append(data) or hashlib.sha256(data).hexdigest())
    assert load_corpus("tiny", tmp_path) == "hello corpus\n"
    assert (tmp_path / "tiny.txt").read_bytes() == good
    assert len(hashed) == 1  # verified once, as downloaded
    # From the cache: verified again, once, as the file may have changed since.
    (tmp_path / "tiny.txt").write_bytes(b"changed\n")
    with pytest.raises(CorpusError, match="sha256.*delete it and retry"):
        load_corpus("tiny", tmp_path)
    assert len(hashed) == 2
