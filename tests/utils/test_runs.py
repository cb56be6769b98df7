"""Run directories: the output directory made up front, with a clear error."""

from __future__ import annotations

import pytest

from lstmkit.utils.runs import make_out_dir


def test_out_dir_that_cannot_be_a_directory(tmp_path):
    (tmp_path / "afile").write_text("")
    assert make_out_dir(tmp_path / "new" / "run").is_dir()
    with pytest.raises(ValueError, match="--out: cannot create directory .*afile' .File exists"):
        make_out_dir(tmp_path / "afile")
    with pytest.raises(ValueError, match="--run: cannot create directory .*sub' .Not a directory"):
        make_out_dir(tmp_path / "afile" / "sub", "--run")
