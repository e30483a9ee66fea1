"""A stalled consumer's process restarts itself in place: the same pid and command, a fresh interpreter."""

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, sys
from pathlib import Path
from flts.runtime import restart_process
record = Path(sys.argv[1])
runs = record.read_text().split() if record.exists() else []
record.write_text(" ".join([*runs, str(os.getpid())]))
if not runs:
    restart_process()
"""


def test_restart_process_runs_the_same_command_again_under_the_same_pid(tmp_path: Path) -> None:
    record = tmp_path / "runs"
    subprocess.run([sys.executable, "-c", SCRIPT, str(record)], check=True, timeout=60)
    first, second = record.read_text().split()
    assert first == second
