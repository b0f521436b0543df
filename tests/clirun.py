"""Running the ``distkv`` client as a user would: a process, piped or on a pseudo-terminal.

:func:`cli` runs ``python -m distkv.cli`` (the console script's code) with
its output piped; :class:`Terminal` runs a program with a pseudo-terminal as
its stdin, stdout and stderr (the stdlib's ``pty``, so no pexpect is needed)
and waits for text by polling with a deadline.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEADLINE = 30.0


def cli_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("DISTKV_PASSWORD", None)
    env.update(extra or {})
    return env


def cli_argv(*args: str) -> List[str]:
    return [sys.executable, "-m", "distkv.cli", *args]


def cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``distkv ARGS`` with stdin, stdout and stderr piped."""
    return subprocess.run(cli_argv(*args), input=stdin, capture_output=True,
                          env=cli_env(), timeout=120)


class Terminal:
    """A program on a pseudo-terminal; :meth:`expect` waits for its output."""

    def __init__(self, argv: Sequence[str], env: Optional[Dict[str, str]] = None) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(list(argv), stdin=slave, stdout=slave, stderr=slave,
                                     env=env or cli_env(), close_fds=True)
        os.close(slave)
        self.master = master
        self.output = b""

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the program closed the terminal
            return False
        self.output += data
        return bool(data)

    def expect(self, text: bytes, timeout: float = DEADLINE) -> bytes:
        """Wait until ``text`` was written; the output up to it is consumed."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if not self._read(0.1) or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in {self.output!r}")
        before, _, self.output = self.output.partition(text)
        return before + text

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = DEADLINE) -> int:
        """Read until the program exits; its exit status."""
        deadline = time.monotonic() + timeout
        while self._read(0.1):
            if time.monotonic() > deadline:
                self.proc.kill()
                break
        try:
            return self.proc.wait(timeout=DEADLINE)
        finally:
            os.close(self.master)


def on_terminal(argv: Sequence[str]) -> bytes:
    """What ``argv`` prints to a terminal (line endings as the terminal writes them)."""
    term = Terminal(argv)
    term.finish()
    return term.output
