"""The SST tree parser: tricky well-formed lines, malformed ones (with line and column), the
binary task, and the real files when the shared data folder is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from lstmkit.data.sst import SSTFormatError, binary_label, load_splits, load_sst, parse_tree, to_binary
from lstmkit.fold import Tree

SST_DIR = Path(__file__).resolve().parents[2].parent / "shared/data/sst/trees"


def test_ordinary_tree():
    t = parse_tree("(3 (2 It) (4 (4 (2 's) (3 (2 a) (4 (3 lovely) (2 film)))) (2 .)))")
    assert t.label == 3 and t.words() == ["It", "'s", "a", "lovely", "film", "."]
    assert [n.label for n in t.leaves()] == [2, 2, 2, 3, 2, 2]
    assert str(t) == "(3 (2 It) (4 (4 (2 's) (3 (2 a) (4 (3 lovely) (2 film)))) (2 .)))"
    assert t.size() == 11 and t.height() == 5


def test_escaped_brackets_and_odd_words():
    line = "(2 (2 -LRB-) (2 (3 good) (2 -RRB-)))"
    assert parse_tree(line).words() == ["-LRB-", "good", "-RRB-"]
    assert parse_tree(line, unescape=True).words() == ["(", "good", ")"]
    # A no-break space is part of a word (SST has "8\xa01\/2"); so are backslashes and quotes.
    assert parse_tree("(2 (2 8\xa01\\/2) (2 ``))").words() == ["8\xa01\\/2", "``"]
    assert parse_tree("  (1   (0 bad)\t(2 .) )  ").words() == ["bad", "."]


def test_single_word_tree_and_other_arities():
    t = parse_tree("(4 masterpiece)")
    assert t.is_leaf and t.label == 4 and t.word == "masterpiece" and t.words() == ["masterpiece"]
    assert len(parse_tree("(2 (1 a) (3 b) (2 c))").children) == 3
    assert parse_tree("(2 (3 (4 a)))").height() == 2  # unary chains parse; the binary model refuses them


@pytest.mark.parametrize("line, message", [
    ("", "empty line"),
    ("(2 a b)", "column 6: a second word 'b'"),
    ("(2 (1 a)", "unclosed"),
    ("(2 (1 a)))", "column 10: unexpected ')' after the end"),
    ("(2 (1 a)) (2 b)", "after the end of the tree"),
    ("(7 a)", "column 2: expected a label 0-4, got '7'"),
    ("(x a)", "expected a label"),
    ("(-1 a)", "expected a label"),
    # str.isdigit() is true for superscript two (which int() refuses) and Arabic-Indic three (read as 3)
    ("(\u00b2 a)", "column 2: expected a label 0-4, got '\u00b2'"),
    ("(\u0663 a)", "column 2: expected a label 0-4, got '\u0663'"),
    ("()", "empty brackets"),
    ("(2)", "neither a word nor subtrees"),
    ("word", "expected '(', got 'word'"),
    ("(2 (1 a) x)", "the word 'x' after subtrees"),
    ("(2 x (1 a))", "a subtree after the word 'x'"),
    ("((2 a))", "expected a label after"),
    (")", "unbalanced"),
])
def test_malformed_lines(line, message):
    with pytest.raises(SSTFormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_tree(line)


def test_file_errors_name_the_line(tmp_path):
    good = "(3 (2 a) (3 b))"
    path = tmp_path / "trees.txt"
    path.write_text(f"{good}\n{good}\n(2 (1 a) (3 b)\n{good}\n", encoding="utf-8")
    with pytest.raises(SSTFormatError, match=r"trees.txt: line 3: column 15: 1 unclosed"):
        load_sst(path)
    path.write_text(f"{good}\n(\u00b2 (2 a) (3 b))\n", encoding="utf-8")
    with pytest.raises(SSTFormatError, match="trees.txt: line 2: column 2: expected a label"):
        load_sst(path)
    path.write_text(f"{good}\n\n{good}\n", encoding="utf-8")  # an empty line is not skipped silently
    with pytest.raises(SSTFormatError, match="line 2: column 1: an empty line"):
        load_sst(path)
    path.write_text(f"{good}\r\n(4 great)", encoding="utf-8")  # CRLF, no final newline
    assert [str(t) for t in load_sst(path)] == [good, "(4 great)"]
    with pytest.raises(FileNotFoundError):
        load_sst(tmp_path / "missing.txt")
    path.write_bytes(b"(2 \xff)\n")
    with pytest.raises(SSTFormatError, match="not UTF-8"):
        load_sst(path)


def test_binary_task():
    trees = [parse_tree(s) for s in ("(2 (3 a) (1 b))", "(0 (2 a) (4 b))", "(4 (4 a) (2 b))")]
    binary = to_binary(trees)
    assert [t.label for t in binary] == [0, 1]
    assert [n.label for n in binary[0].postorder()] == [None, 1, 0]
    assert [binary_label(k) for k in range(5)] == [0, 0, None, 1, 1]
    assert isinstance(binary[0], Tree) and trees[1].label == 0  # the originals are untouched


def test_real_files():
    if not SST_DIR.is_dir():
        pytest.skip(f"shared data absent: {SST_DIR}")
    dev = load_sst(SST_DIR / "dev.txt")
    assert len(dev) == 1101 and len(to_binary(dev)) == 872
    lines = (SST_DIR / "dev.txt").read_text(encoding="utf-8").splitlines()
    assert [str(t) for t in dev] == lines  # the parse is exact: printing gives the line back
    assert all(len(n.children) in (0, 2) for t in dev for n in t.postorder())
    with pytest.raises(FileNotFoundError, match="no directory"):
        load_splits(SST_DIR / "nope")
