from pathlib import Path

import pytest

# CI runs from a fresh clone with the shared data folder beside it.
TIMEMACHINE = Path(__file__).resolve().parents[3].parent / "shared/data/timemachine/timemachine.txt"


@pytest.fixture
def timemachine() -> Path:
    if not TIMEMACHINE.is_file():
        pytest.skip(f"shared data absent: {TIMEMACHINE}")
    return TIMEMACHINE


@pytest.fixture
def tiny_text(tmp_path, timemachine) -> Path:
    """The first 3,000 characters of The Time Machine, as a file of its own."""
    path = tmp_path / "tiny.txt"
    path.write_text(timemachine.read_text()[:3000])
    return path
