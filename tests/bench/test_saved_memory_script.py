"""benchmarks/saved_memory.py: a table row per CONFIG, and one-line errors for a bad one."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "saved_memory.py"


def run(*configs: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *configs], capture_output=True, text=True, timeout=300)


def test_a_row_per_config():
    r = run("T3,B2,I3,H4,L2,bi", "T3,B2,I3,H5,P2,peephole")
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| T")]
    assert [row.split(" | ")[0] for row in rows] == ["| T3,B2,I3,H4,L2,bi", "| T3,B2,I3,H5,P2,peephole"]
    assert rows[1].split(" | ")[1] == "-"  # nn.LSTM has no peephole cell


def test_bad_configs_are_refused_in_one_line():
    for config, message in [("T3,B2", "CONFIG: 'T3,B2' lacks I, H"), ("T3,B2,I3,H4,L0", "CONFIG: expected tokens"),
                            ("T3,B2,I3,H4,gru", "CONFIG: expected an LSTM cell"),
                            ("T3,B2,I3,H4,packed", "CONFIG: the padded layout only")]:
        r = run(config)
        assert r.returncode == 2 and f"error: {message}" in r.stderr and "Traceback" not in r.stderr, (config, r.stderr)
