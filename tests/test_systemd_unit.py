"""The example systemd unit (contrib/distkv.service) is one systemd accepts
without a warning, and it starts twistd with options DistKV accepts."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from distkv.tap import Options
from tests.realnodes import require_tool, twistd_for

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"


def test_systemd_analyze_verifies_the_example_unit(tmp_path: Path) -> None:
    """systemd-analyze verify: exit 0 and not one warning (it only warns about
    unknown keys and bad values), with ExecStart pointing at a real twistd."""
    analyze = require_tool("systemd-analyze")
    unit = tmp_path / "distkv.service"
    text = (CONTRIB / "distkv.service").read_text()
    assert "/opt/distkv/bin/twistd" in text
    unit.write_text(text.replace("/opt/distkv/bin/twistd", twistd_for(sys.executable)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "" and done.stdout.strip() == "", done.stderr + done.stdout


def test_the_unit_and_its_environment_file_give_valid_options(tmp_path: Path) -> None:
    """ExecStart's distkv options, with contrib/distkv.env's $DISTKV_OPTIONS,
    pass twistd distkv's checks (the secret file swapped for a scratch one)."""
    exec_start = next(line for line in (CONTRIB / "distkv.service").read_text().splitlines()
                      if line.startswith("ExecStart="))
    env = next(line for line in (CONTRIB / "distkv.env").read_text().splitlines()
               if line.startswith("DISTKV_OPTIONS="))
    argv = shlex.split(exec_start.split("=", 1)[1])
    assert argv[1:4] == ["-n", "--pidfile=", "distkv"]
    options = argv[argv.index("distkv") + 1:]
    expanded = []
    for word in options:
        expanded.extend(shlex.split(env.split("=", 1)[1]) if word == "$DISTKV_OPTIONS"
                        else [word])
    secret = tmp_path / "secret"
    secret.write_text("s" * 64)
    secret.chmod(0o600)
    expanded = [str(secret) if word == "/etc/distkv/cluster-secret" else word
                for word in expanded]
    expanded[expanded.index("/var/lib/distkv")] = str(tmp_path / "data")
    config = Options()
    config.parseOptions(expanded)
    assert config["data-dir"] == str(tmp_path / "data")
    assert config["peers"] == [("10.0.0.2", 9000), ("10.0.0.3", 9000)]
    assert config["endpoint"] == "tcp:9000:interface=10.0.0.1"
