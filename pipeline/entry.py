"""What every entry point does first: check the environment, then turn user errors into one line.

Import this module before anything else in a script (it needs only the standard library), so that a
missing dependency says how to set up instead of ending in ``No module named 'torch'``::

    from pipeline.entry import guarded      # first: checks the environment
    ...
    if __name__ == "__main__":
        guarded(main)

``guarded(main)`` runs ``main()``; an error of the user's making (a missing or malformed input, a
bad profile or flag, a refused checkpoint) prints ``error: <message>`` and exits with code 2.
"""
from __future__ import annotations

import importlib.util
import sys

REQUIRED = ("torch", "torchvision", "numpy", "pandas", "cv2", "sklearn", "matplotlib", "tqdm")
SETUP_HINT = ("set up the environment with `make setup` (or `make demo`) and run the script with "
              "`.venv/bin/python`")


def missing_dependencies(names=REQUIRED) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


def check_environment(names=REQUIRED) -> None:
    missing = missing_dependencies(names)
    if missing:
        sys.stderr.write(f"error: missing Python package(s) {', '.join(missing)} in {sys.executable}; "
                         f"{SETUP_HINT}\n")
        raise SystemExit(2)


def user_error_types() -> tuple[type, ...]:
    """The exception classes that mean "the user's input or settings are wrong"."""
    # imported here, not at the top: this module must load before the dependencies are checked
    from pipeline.checkpoint import CheckpointError
    from pipeline.config import ConfigError
    from pipeline.io import InputError
    from pipeline.profiles import ProfileError
    return (InputError, ConfigError, ProfileError, CheckpointError, FileNotFoundError)


def guarded(main, argv=None) -> None:
    """Run ``main(argv)``; print user errors as one ``error:`` line and exit 2."""
    kinds = user_error_types()
    try:
        main(argv) if argv is not None else main()
    except kinds as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: finished work is kept; run the same command again to resume\n")
        raise SystemExit(130) from None


check_environment()
