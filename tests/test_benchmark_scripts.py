"""Every benchmark script starts as the README runs it: ``python benchmarks/<name>.py`` from any
working directory (no PYTHONPATH), so ``--help`` parses its imports and flags and exits 0."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# stage5_tiny_world.py imports from the working directory on purpose (it measures the checkout it is run in)
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")
                 if not p.name.startswith("_") and p.name != "stage5_tiny_world.py")


def test_every_benchmark_script_starts_from_any_directory(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    procs = {name: subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / name), "--help"], cwd=tmp_path,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in SCRIPTS}                  # all at once: each is mostly the torch import
    failed = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=300)
        if p.returncode != 0 or "usage:" not in out:
            failed[name] = err[-1500:]
    assert len(SCRIPTS) >= 10 and not failed, failed
