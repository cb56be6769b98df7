"""The Stanford Sentiment Treebank (Socher et al. 2013) in its PTB-style tree files.

One tree per line, a label 0-4 on every node, words at the leaves:

    (3 (2 It) (4 (4 (2 's) (4 (3 (2 a) (4 (3 lovely) (2 film))) ...

Brackets inside words are escaped as -LRB- / -RRB-. `parse_tree` reads one line; `load_sst`
reads a whole file (any file of this format) and raises `SSTFormatError` naming the file, the
line and the column of the first malformed line. Nothing is skipped: tree k is line k + 1.

Tasks: fine-grained, the 5 labels (very negative .. very positive); binary, where sentences
with a neutral root (label 2) are dropped and labels < 2 are negative (0), > 2 positive (1);
neutral nodes inside a tree keep no binary label (None).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lstmkit.fold.tree import Tree

FINE_CLASSES = ("very negative", "negative", "neutral", "positive", "very positive")
BINARY_CLASSES = ("negative", "positive")
SPLITS = ("train", "dev", "test")
PTB_ESCAPES = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}
DEFAULT_DIR = Path("..") / "shared" / "data" / "sst" / "trees"

# Tokens are split at ASCII whitespace only: words may contain other spaces ("8\xa01\\/2").
_TOKEN = re.compile(r"\(|\)|[^ \t\r\n\f\v()]+")


class SSTFormatError(ValueError):
    """A line that is not one well-formed labelled tree."""


def parse_tree(line: str, num_labels: int = 5, unescape: bool = False, where: str = "tree") -> Tree:
    """One PTB-style tree `(label word)` / `(label subtree subtree ...)` -> Tree.

    Labels must be ints in [0, num_labels). unescape=True turns -LRB- / -RRB- (and the other
    PTB bracket escapes) back into brackets. Errors name `where` and the 1-based column.
    """
    tree = _parse_fast(line, num_labels, unescape)
    return tree if tree is not None else _parse_checked(line, num_labels, unescape, where)


_LABELS = {str(k): k for k in range(10)}


def _parse_fast(line: str, num_labels: int, unescape: bool) -> Tree | None:
    """The common case of a well-formed line, quickly; None at anything unexpected."""
    tokens = _TOKEN.findall(line)
    n = len(tokens)
    stack: list[list[Tree]] = []
    labels: list[int] = []
    i = 0
    while i < n:
        tok = tokens[i]
        if tok == "(":
            if i + 1 >= n or (label := _LABELS.get(tokens[i + 1])) is None or label >= num_labels:
                return None
            if i + 3 < n and tokens[i + 2] not in "()" and tokens[i + 3] == ")":  # a leaf
                if not stack:
                    return Tree(label, (), PTB_ESCAPES.get(tokens[i + 2], tokens[i + 2]) if unescape else tokens[i + 2]) \
                        if i + 4 == n and i == 0 else None
                word = tokens[i + 2]
                stack[-1].append(Tree(label, (), PTB_ESCAPES.get(word, word) if unescape else word))
                i += 4
                continue
            if tokens[i + 2:i + 3] != ["("]:
                return None
            stack.append([])
            labels.append(label)
            i += 2
        elif tok == ")":
            if not stack:
                return None
            node = Tree(labels.pop(), stack.pop())
            if not stack:
                return node if i + 1 == n else None
            stack[-1].append(node)
            i += 1
        else:
            return None
    return None


def _parse_checked(line: str, num_labels: int, unescape: bool, where: str) -> Tree:
    """Token by token, with the column of the first problem (the fast path's fallback)."""

    def fail(col: int, msg: str) -> SSTFormatError:
        return SSTFormatError(f"{where}: column {col}: {msg}")

    stack: list[list] = []  # frames [label, children, word]
    root: Tree | None = None
    for m in _TOKEN.finditer(line):
        tok, col = m.group(), m.start() + 1
        if root is not None:
            raise fail(col, f"unexpected {tok!r} after the end of the tree")
        if tok == "(":
            if stack:
                top = stack[-1]
                if top[0] is None:
                    raise fail(col, "expected a label after '(', got '('")
                if top[2] is not None:
                    raise fail(col, f"a subtree after the word {top[2]!r}: a node has either one word or subtrees")
            stack.append([None, [], None])
        elif tok == ")":
            if not stack:
                raise fail(col, "unbalanced ')'")
            label, children, word = stack.pop()
            if label is None:
                raise fail(col, "empty brackets '()'")
            if word is None and not children:
                raise fail(col, f"node with label {label} has neither a word nor subtrees")
            node = Tree(label, children, word)
            if stack:
                stack[-1][1].append(node)
            else:
                root = node
        else:
            if not stack:
                raise fail(col, f"expected '(', got {tok!r}")
            top = stack[-1]
            if top[0] is None:
                # ASCII only: str.isdigit also takes '²' (which int() refuses) and '٣' (which it reads as 3)
                if not (tok.isascii() and tok.isdigit()) or int(tok) >= num_labels:
                    raise fail(col, f"expected a label 0-{num_labels - 1}, got {tok!r}")
                top[0] = int(tok)
            elif top[1]:
                raise fail(col, f"the word {tok!r} after subtrees: a node has either one word or subtrees")
            elif top[2] is not None:
                raise fail(col, f"a second word {tok!r} after {top[2]!r}: a leaf has one word")
            else:
                top[2] = PTB_ESCAPES.get(tok, tok) if unescape else tok
    if stack:
        raise fail(len(line.rstrip()) + 1, f"{len(stack)} unclosed '(' at the end of the line")
    if root is None:
        raise fail(1, "an empty line, expected a tree")
    return root


def load_sst(path: str | os.PathLike) -> list[Tree]:
    """Every tree of an SST-format file (UTF-8, one tree per line); tree k is line k + 1."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SST: no file at {str(path)!r}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise SSTFormatError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start an empty one
    if not lines:
        raise SSTFormatError(f"{path}: the file is empty")
    return [parse_tree(line.rstrip("\r"), where=f"{path}: line {k}")
            for k, line in enumerate(lines, 1)]


def load_splits(directory: str | os.PathLike = DEFAULT_DIR) -> dict[str, list[Tree]]:
    """{train, dev, test}.txt of an SST tree directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"SST: no directory at {str(directory)!r} (expected train.txt, dev.txt, test.txt)")
    return {split: load_sst(directory / f"{split}.txt") for split in SPLITS}


def binary_label(label: int | None) -> int | None:
    """5-class label -> 0 (negative, < 2), 1 (positive, > 2) or None (neutral)."""
    if label is None or label == 2:
        return None
    return 0 if label < 2 else 1


def to_binary(trees: list[Tree]) -> list[Tree]:
    """The binary task: drop trees with a neutral root; every label through `binary_label`."""
    return [t.map(label=binary_label) for t in trees if t.label != 2]
