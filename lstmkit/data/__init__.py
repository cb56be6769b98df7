"""Text corpora: UTF-8 files checked before use, and named corpora (embedded or downloaded + verified)."""

from lstmkit.data.corpora import DEFAULT, NAMES, REMOTE, cache_dir, fetch, load_corpus, pydoc_topics
from lstmkit.data.text import CorpusError, decode_text, read_text_file

__all__ = [
    "CorpusError", "read_text_file", "decode_text",
    "DEFAULT", "NAMES", "REMOTE", "cache_dir", "fetch", "load_corpus", "pydoc_topics",
]
