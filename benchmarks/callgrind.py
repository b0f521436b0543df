"""The instructions a Python snippet executes, counted by valgrind's callgrind.

Shared by the ``*_instructions.py`` benchmarks: a count does not move with the
machine's load, so two versions of the code compare on a busy machine too.
Each run uses ``PYTHONHASHSEED=0`` (the same dict layouts every time, so the
start-up costs of two runs are equal and cancel out in their difference) and
imports the repository's ``distkv`` and these benchmarks' helpers.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Dict, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def env() -> Dict[str, str]:
    """The environment a snippet runs in (see the module)."""
    return dict(os.environ, PYTHONHASHSEED="0",
                PYTHONPATH=os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")]))


def instructions(python: str, script: str, args: Sequence[str], what: str,
                 timeout: int = 1800) -> int:
    """Instructions ``python -c script *args`` executes (``what`` names the run
    in the error raised when it fails)."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         python, "-c", script, *args],
        capture_output=True, text=True, env=env(), cwd=ROOT, timeout=timeout,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed ({what}):\n{done.stderr[-2000:]}")
    return int(found.group(1))
