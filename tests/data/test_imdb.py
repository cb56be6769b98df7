"""The IMDB reviews CSV loader and tokeniser: any file of the format, clear errors for bad rows."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lstmkit.data.imdb import IMDBFormatError, load_imdb, tokenize

IMDB_CSV = Path(__file__).resolve().parents[2].parent / "shared/data/imdb/imdb_subset.csv"


def test_tokenize():
    assert tokenize("Great film!<br /><br />I didn't LIKE the end... 10/10") == \
        ["great", "film", "!", "i", "didn't", "like", "the", "end", ".", ".", ".", "10", "/", "10"]
    assert tokenize("") == []
    # Accented letters, other scripts and curly apostrophes stay inside their words.
    assert tokenize("Amélie, isn’t it´s Ame\u0301lie's; ДОБРЫЙ_фильм") == \
        ["amélie", ",", "isn't", "it's", "amélie's", ";", "добрый", "_", "фильм"]
    # Marks NFC has no letter for stay in their word: İ lowers to i + U+0307; Devanagari's vowel signs.
    assert tokenize("İstanbul हिंदी!") == ["i\u0307stanbul", "\u0939\u093f\u0902\u0926\u0940", "!"]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "reviews.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_any_file_of_the_format(tmp_path):
    path = write(tmp_path, 'split,label,rating,id,text\ntrain,neg,1,1,"Bad, bad ""movie"".\nTwo lines."\n'
                           "train,pos,9,2,Fine\ntest,1,8,3,ok\n")
    data = load_imdb(path)
    assert data["train"].texts == ['Bad, bad "movie".\nTwo lines.', "Fine"]
    assert data["train"].labels == [0, 1] and data["test"].labels == [1]
    # Column order and extra columns do not matter.
    path = write(tmp_path, "text,split,label\nnice,train,pos\n")
    assert load_imdb(path)["train"].labels == [1]


@pytest.mark.parametrize("text, message", [
    ("split,label\ntrain,neg\n", r"line 1: the header .* lacks the column\(s\) \['text'\]"),
    ("split,label,text\ntrain,neg,a\ntrain,meh,b\n", "line 3: label must be neg/pos"),
    ("split,label,text\ntrain,neg,a\ntrain,neg\n", "line 3: expected 3 fields, got 2"),
    ("split,label,text\n,neg,a\n", "line 2: split must be train or test, got ''"),
    ("split,label,text\ntrain,neg,a\ndev,pos,b\n", "line 3: split must be train or test, got 'dev'"),
    ("label,split,label,text\npos,train,neg,x\n", "line 1: the header .* has more than one column 'label'"),
    ("split,label,Text,text \ntrain,neg,a,b\n", "line 1: the header .* has more than one column 'text'"),
    ("split,label,text\n", "no reviews"),
    ("", "empty"),
])
def test_malformed_files(tmp_path, text, message):
    with pytest.raises(IMDBFormatError, match=message):
        load_imdb(write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_imdb(tmp_path / "nope.csv")


def test_real_file():
    if not IMDB_CSV.is_file():
        pytest.skip(f"shared data absent: {IMDB_CSV}")
    data = load_imdb(IMDB_CSV)
    assert {k: len(v) for k, v in data.items()} == {"train": 10000, "test": 5000}
    assert sum(data["test"].labels) == 2500


@pytest.mark.parametrize("rows_before", [0, 1, 2000])  # 2000 rows: the bad byte lies past the reader's first block
def test_not_utf8_names_the_right_line(tmp_path, rows_before):
    good = "".join(f"train,pos,review number {k}\n" for k in range(rows_before))
    path = tmp_path / "reviews.csv"
    path.write_bytes(f"split,label,text\n{good}".encode() + b"train,neg,caf\xe9 film\ntest,pos,ok\n")
    offset = path.read_bytes().index(b"\xe9")
    with pytest.raises(IMDBFormatError) as e:
        load_imdb(path)
    assert str(e.value) == (f"{path}: line {rows_before + 2}: not UTF-8 text (invalid continuation byte "
                            f"at byte {offset} of the file)")
    path.write_bytes(b"split,label,te\xffxt\ntrain,pos,ok\n")
    with pytest.raises(IMDBFormatError, match=r": line 1: not UTF-8 text"):
        load_imdb(path)


def test_blank_lines_and_header_names_in_any_case(tmp_path):
    path = write(tmp_path, "\nSplit, Label ,TEXT\ntrain,pos,great\n\ntest,neg,\"bad\nmovie\"\n\n")
    data = load_imdb(path)
    assert data["train"].texts == ["great"] and data["train"].labels == [1]
    assert data["test"].texts == ["bad\nmovie"] and data["test"].labels == [0]
    # Line numbers count the blank lines.
    with pytest.raises(IMDBFormatError, match="line 4: label must be neg/pos"):
        load_imdb(write(tmp_path, "split,label,text\ntrain,pos,a\n\ntrain,meh,b\n"))
    with pytest.raises(IMDBFormatError, match="no reviews"):
        load_imdb(write(tmp_path, "split,label,text\n\n\n"))


def test_split_names_in_any_case(tmp_path):
    """Rows of split "Train" were left out without a word."""
    data = load_imdb(write(tmp_path, "split,label,text\ntrain,pos,a\nTrain,neg,b\n TEST ,pos,c\n"))
    assert data["train"].texts == ["a", "b"] and data["test"].texts == ["c"]


def test_a_review_longer_than_the_csv_modules_default_field_limit(tmp_path):
    long = "great film. " * 12000  # 144,000 characters; the csv module's default limit is 131,072
    path = write(tmp_path, f'split,label,text\ntrain,pos,"{long}"\ntest,neg,bad\n')
    before = csv.field_size_limit()
    assert load_imdb(path)["train"].texts == [long]
    assert csv.field_size_limit() == before  # the module's global is left as it was
