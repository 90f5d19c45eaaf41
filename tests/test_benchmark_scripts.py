"""Every benchmark script starts as the README runs it: ``python benchmarks/<name>.py`` from any
working directory (no PYTHONPATH), so ``--help`` parses its imports and flags and exits 0."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# stage5_tiny_world.py imports from the working directory on purpose (it measures the checkout it is run in)
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")
                 if not p.name.startswith("_") and p.name != "stage5_tiny_world.py")


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_script_starts_from_any_directory(name, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--help"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout
