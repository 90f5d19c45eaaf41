"""Fault suite plumbing: session worlds, an in-process script runner, the case table.

Each case records ``expected`` and ``observed`` through the ``case`` fixture; at the end of the
session the table (case, expected, observed, result) is written as markdown to the file named by
``OHLORA_RELIABILITY_TABLE`` (``make reliability`` sets it). Cases marked ``reliability_slow``
(kill -9 at random moments) run only with ``OHLORA_RELIABILITY_SLOW=1`` (``make reliability``).
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import torch

from tests.reliability import world as worlds

_ROWS: list[dict] = []


def pytest_collection_modifyitems(config, items):
    if os.environ.get("OHLORA_RELIABILITY_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="kill -9 cases: run with `make reliability` (OHLORA_RELIABILITY_SLOW=1)")
    for item in items:
        if "reliability_slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def case(request):
    """A dict the test fills with ``expected`` and ``observed``; it becomes one table row."""
    row = {"case": request.node.name, "expected": "", "observed": ""}
    request.node._reliability_row = row
    yield row


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    row = getattr(item, "_reliability_row", None)
    if row is None or rep.when != "call" and not (rep.when == "setup" and rep.failed):
        return
    if rep.skipped:
        return
    _ROWS.append({**row, "result": "pass" if rep.passed else "FAIL"})


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("OHLORA_RELIABILITY_TABLE")
    if not path or not _ROWS:
        return
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")[:300]     # noqa: E731
    n_pass = sum(r["result"] == "pass" for r in _ROWS)
    lines = [f"Fault suite: {len(_ROWS)} cases, {n_pass} pass, {len(_ROWS) - n_pass} fail.", "",
             "| case | expected | observed | result |", "|---|---|---|---|"]
    lines += [f"| {esc(r['case'])} | {esc(r['expected'])} | {esc(r['observed'])} | {r['result']} |" for r in _ROWS]
    Path(path).write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------ worlds

@pytest.fixture(scope="session")
def world1(tmp_path_factory):
    return worlds.stage1_world(tmp_path_factory.mktemp("rel1"))


@pytest.fixture(scope="session")
def world2(tmp_path_factory):
    return worlds.stage2_world(tmp_path_factory.mktemp("rel2"))


@pytest.fixture(scope="session")
def world34(tmp_path_factory):
    return worlds.stage34_world(tmp_path_factory.mktemp("rel34"))


@pytest.fixture(scope="session")
def world5(tmp_path_factory):
    return worlds.stage5_world(tmp_path_factory.mktemp("rel5"))


@pytest.fixture(scope="session")
def world5s(tmp_path_factory):
    return worlds.stage5_shipped_world(tmp_path_factory.mktemp("rel5s"))


@pytest.fixture(autouse=True)
def _keep_threads():
    """Scripts set torch's thread count; the session's is restored after each case."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def run_script(module: str, argv: list[str], capsys) -> tuple[int, str]:
    """Run a script's ``main`` in this process as its ``__main__`` does (``guarded``); returns
    (exit code, stderr). An exception that escapes ``guarded`` (a traceback for the user) is
    returned as code -1 with the exception's type and message."""
    from pipeline.entry import guarded
    mod = importlib.import_module(module)
    capsys.readouterr()
    code = 0
    try:
        guarded(mod.main, list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:                    # what a user would see as a traceback
        return -1, f"traceback: {type(exc).__name__}: {exc}"
    return code, capsys.readouterr().err.strip()


def partial_outputs(out: Path) -> list[str]:
    """Files of ``out`` that a failed run must not leave: anything but the lineage record (state
    "running"), the settings record and the per-image cache."""
    if not out.exists():
        return []
    keep = {"lineage.json", "run_config.json"}
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and p.name not in keep and "cache" not in p.relative_to(out).parts)
