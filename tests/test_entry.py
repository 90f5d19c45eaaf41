"""pipeline.entry: one-line user errors with exit code 2, a setup hint for missing packages."""
import subprocess
import sys

import pytest

from pipeline.entry import SETUP_HINT, guarded, missing_dependencies
from pipeline.io import InputError


def test_user_error_is_one_line_and_exit_2(capsys):
    def main():
        raise InputError("stage1/latents.csv, row 3: not a number")
    with pytest.raises(SystemExit) as e:
        guarded(main)
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: stage1/latents.csv, row 3: not a number\n"


def test_programming_errors_still_raise():
    def main():
        raise ZeroDivisionError("bug")
    with pytest.raises(ZeroDivisionError):
        guarded(main)


def test_missing_package_names_it_and_how_to_set_up():
    assert missing_dependencies(("json", "no_such_package_xyz")) == ["no_such_package_xyz"]
    code = ("import sys; sys.modules['torch'] = None; import importlib.util as u; "
            "orig = u.find_spec; u.find_spec = lambda n, *a: None if n == 'torch' else orig(n, *a); "
            "import pipeline.entry")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert "missing Python package(s) torch" in r.stderr and SETUP_HINT in r.stderr
