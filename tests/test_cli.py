"""The ``distkv`` client against real nodes: one-shot, piped, ``-x``, the prompt, ``cluster``, dump/load.

Every test runs the client as a process (``python -m distkv.cli``, the console
script's code) against ``twistd -n distkv`` nodes on loopback ports.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
from pathlib import Path
from typing import Dict, List, Tuple

from distkv.cli.client import Connection
from tests.clirun import ROOT, Terminal, cli, cli_argv, cli_env
from tests.realnodes import Cluster, NodeProcess, free_ports, wait_until


def test_console_script_is_declared() -> None:
    """setup.cfg installs a ``distkv`` console script that runs the client's entry point."""
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    scripts = config["options.entry_points"]["console_scripts"]
    assert "distkv = distkv.cli.main:run" in scripts.strip().splitlines()
    assert "distkv.cli" in config["options"]["packages"].split()


def test_one_shot_piped_prints_raw_and_exits_nonzero_on_error(cluster: Cluster) -> None:
    """Piped, replies print raw as redis-cli's do; an error reply exits 1, a refused connect 2."""
    (node,) = cluster.start(1)
    port = str(node.port)
    done = cli("-p", port, "SET", "greeting", "hello world")
    assert (done.returncode, done.stdout) == (0, b"OK\n")
    assert cli("-p", port, "GET", "greeting").stdout == b"hello world\n"
    assert cli("-p", port, "GET", "missing").stdout == b"\n"
    assert cli("-p", port, "MGET", "greeting", "missing").stdout == b"hello world\n\n"
    assert cli("-p", port, "EXISTS", "greeting").stdout == b"1\n"
    bad = cli("-p", port, "GET")
    assert bad.returncode == 1
    assert bad.stdout == b"ERR wrong number of arguments for 'get' command\n\n"
    (closed,) = free_ports(1)
    refused = cli("-p", str(closed), "PING")
    assert refused.returncode == 2
    assert b"Connection refused" in refused.stderr


def test_x_reads_the_last_argument_from_stdin(cluster: Cluster) -> None:
    """``-x`` sends stdin, every byte of it, as the command's last argument."""
    (node,) = cluster.start(1)
    value = bytes(range(256)) + b"\r\n\x00tail"
    assert cli("-p", str(node.port), "-x", "SET", "blob", stdin=value).stdout == b"OK\n"
    with Connection("127.0.0.1", node.port) as conn:
        assert conn.call("GET", "blob") == value
    assert cli("-p", str(node.port), "GET", "blob").stdout == value + b"\n"


def test_commands_from_piped_stdin_run_one_per_line(cluster: Cluster) -> None:
    """With no command and stdin piped, each line is a command, split with Redis's quoting."""
    (node,) = cluster.start(1)
    done = cli("-p", str(node.port), stdin=b'SET k "a b\\x41"\nGET k\nDEL k nope\n')
    assert (done.returncode, done.stdout) == (0, b"OK\na bA\n1\n")
    failed = cli("-p", str(node.port), stdin=b"PING\nNOSUCH\nPING\n")
    assert failed.returncode == 1
    assert failed.stdout.startswith(b"PONG\nERR unknown command 'NOSUCH'")
    assert failed.stdout.endswith(b"\nPONG\n")


def test_one_shot_on_a_terminal_formats_like_redis_cli(cluster: Cluster) -> None:
    """On a terminal, replies are quoted, typed and numbered; --raw turns that off."""
    (node,) = cluster.start(1)
    port = str(node.port)
    with Connection("127.0.0.1", node.port) as conn:
        conn.call("SET", "k", b'say "hi"\n\xff')
    term = Terminal(cli_argv("-p", port, "MGET", "k", "missing"))
    assert term.finish() == 0
    assert term.output == b'1) "say \\"hi\\"\\n\\xff"\r\n2) (nil)\r\n'
    term = Terminal(cli_argv("-p", port, "DBSIZE"))
    term.finish()
    assert term.output == b"(integer) 1\r\n"
    term = Terminal(cli_argv("-p", port, "--raw", "DBSIZE"))
    term.finish()
    assert term.output == b"1\r\n"
    term = Terminal(cli_argv("-p", port, "GET"))
    assert term.finish() == 1
    assert term.output == b"(error) ERR wrong number of arguments for 'get' command\r\n"


def test_prompt_completes_formats_and_keeps_history(cluster: Cluster, tmp_path: Path) -> None:
    """The prompt completes command names on Tab, prints replies formatted and saves history."""
    (node,) = cluster.start(1)
    history = tmp_path / "history"
    env = cli_env({"DISTKV_HISTFILE": str(history), "TERM": os.environ.get("DISTKV_TEST_TERM", "xterm")})
    term = Terminal(cli_argv("-p", str(node.port)), env)
    prompt = f"127.0.0.1:{node.port}> ".encode()
    term.expect(prompt)
    term.send(b"SET k 'two words'\r")
    term.expect(b"OK")
    term.expect(prompt)
    term.send(b"mge\t")  # completes to "mget " (the echo is the line editor's business)
    term.send(b"k nope\r")
    assert b'1) "two words"\r\n2) (nil)' in term.expect(b"(nil)")
    term.expect(prompt)
    term.send(b"STRLEN k\r")
    term.expect(b"(integer) 9")
    term.expect(prompt)
    term.send(b"GET\r")
    term.expect(b"(error) ERR wrong number of arguments for 'get' command")
    term.expect(prompt)
    term.send(b"quit\r")
    assert term.finish() == 0
    assert history.read_text().splitlines()[-5:] == [
        "SET k 'two words'", "mget k nope", "STRLEN k", "GET", "quit"]
    # The next session starts with that history: Up recalls the last line typed.
    term = Terminal(cli_argv("-p", str(node.port)), env)
    term.expect(prompt)
    term.send(b"\x1bOA\x1bOA\x1bOA\r")  # Up (keypad mode): "quit", "GET", then "STRLEN k"
    term.expect(b"(integer) 9")
    term.expect(prompt)
    term.send(b"exit\r")
    assert term.finish() == 0


def cluster_table(port: int, *extra: str) -> Tuple[int, Dict[str, List[str]]]:
    done = cli("-p", str(port), "cluster", *extra)
    lines = done.stdout.decode().splitlines()
    header = lines[0].split()
    assert header[:4] == ["ID", "ADDRESS", "STATE", "KEYS"], done.stdout
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    return done.returncode, rows


def test_cluster_shows_every_member_and_a_stopped_one(cluster: Cluster) -> None:
    """``distkv cluster`` lists all members from any node, exits 0 while all serve,
    and shows a stopped member as down with exit status 1."""
    nodes = cluster.start(3)
    with Connection("127.0.0.1", nodes[0].port) as conn:
        conn.pipeline([("SET", f"k{i}", "v") for i in range(5)])

    def everyone_linked() -> bool:
        status, rows = cluster_table(nodes[1].port)
        return status == 0 and all(row[2] == "5" and row[3:5] == ["2/2", "2/2"]
                                   for row in rows.values())

    wait_until(everyone_linked, "every member to hold 5 keys and be linked both ways")
    status, rows = cluster_table(nodes[2].port)
    assert sorted(rows) == ["node1", "node2", "node3"]
    assert all(row[1] == "serving" for row in rows.values())
    assert rows["node1"][0] == f"127.0.0.1:{nodes[0].port}"
    nodes[2].kill()
    status, rows = cluster_table(nodes[0].port)
    assert status == 1
    assert rows["node3"][1] == "down"  # "down (Connection refused)"
    assert rows["node1"][1] == rows["node2"][1] == "serving"
    # Asking through ADDR instead of -h/-p: the same view.
    done = cli("cluster", f"127.0.0.1:{nodes[1].port}")
    assert done.returncode == 1 and b"node3" in done.stdout
    # The node asked is down itself: 2, and why on stderr.
    done = cli("cluster", f"127.0.0.1:{nodes[2].port}")
    assert done.returncode == 2 and b"Connection refused" in done.stderr
    # CLUSTER's own subcommands still go to the node.
    done = cli("-p", str(nodes[0].port), "CLUSTER", "MYID")
    assert done.stdout == b"node1\n"


def read_all(port: int) -> Dict[bytes, Tuple[bytes, int]]:
    """Every key of a node with its value and PEXPIRETIME."""
    with Connection("127.0.0.1", port) as conn:
        keys = conn.call("KEYS", "*")
        assert isinstance(keys, list)
        replies = conn.pipeline([(verb, key) for key in keys for verb in ("GET", "PEXPIRETIME")])
    return {key: (replies[2 * i], replies[2 * i + 1])  # type: ignore[misc]
            for i, key in enumerate(keys)}  # type: ignore[arg-type]


def test_dump_then_load_into_an_empty_cluster_gives_identical_data(
        cluster: Cluster, tmp_path: Path) -> None:
    """Every key, binary ones included, with its value and expiry, survives dump and load."""
    (source,) = cluster.start(1)
    with Connection("127.0.0.1", source.port) as conn:
        requests = [("SET", f"plain{i}", f"value {i} é") for i in range(1200)]
        requests += [("SET", b"bin\xff\x00key", bytes(range(256)))]
        requests += [("SET", "text", b"\xc3\x28 not utf-8")]
        requests += [("SET", f"ttl{i}", "soon", "PX", str(600000 + i)) for i in range(50)]
        requests += [("SET", "", "the empty key")]
        assert all(reply == "OK" for reply in conn.pipeline(requests))
    before = read_all(source.port)
    assert len(before) == 1253
    dump = tmp_path / "dump.jsonl"
    done = cli("-p", str(source.port), "dump", str(dump))
    assert done.returncode == 0, done.stderr
    assert b"dumped 1253 keys (50 with an expiry)" in done.stderr
    lines = [json.loads(line) for line in dump.read_text("utf-8").splitlines()]
    assert len(lines) == 1253
    # Bytes that are not UTF-8 are base64; the rest is JSON text.
    assert {"key64": "Ymlu/wBrZXk=", "value64": base64.b64encode(bytes(range(256))).decode()} \
        in lines
    assert {"key": "text", "value64": "wyggbm90IHV0Zi04"} in lines
    assert {"key": "plain7", "value": "value 7 é"} in lines
    empty = cluster.start(2)
    done = cli("-p", str(empty[0].port), "load", str(dump))
    assert done.returncode == 0, done.stderr
    assert b"loaded 1253 keys (50 with an expiry)" in done.stderr
    assert read_all(empty[0].port) == before
    wait_until(lambda: read_all(empty[1].port) == before, "the load to reach the other node")


def test_load_reports_bad_lines(cluster: Cluster, tmp_path: Path) -> None:
    """A line that is not a dump record is named (file:line) and the exit status is 1."""
    (node,) = cluster.start(1)
    dump = tmp_path / "bad.jsonl"
    dump.write_text('{"key":"a","value":"1"}\nnot json\n{"key":"b"}\n')
    done = cli("-p", str(node.port), "load", str(dump))
    assert done.returncode == 1
    assert f"{dump}:2:".encode() in done.stderr and f"{dump}:3: no value".encode() in done.stderr
    assert b"loaded 1 keys" in done.stderr



def test_login_with_a_password_file(cluster: Cluster, tmp_path: Path) -> None:
    """``--user``/``--pass-file`` log in; a wrong password exits 2 saying why,
    none gets the node's NOAUTH (exit 1), a read user NOPERM on a write."""
    users = tmp_path / "users"
    users.write_text("app readwrite >app secret\nviewer read >look only\n")
    (number,) = free_ports(1)
    node = cluster.add(NodeProcess(tmp_path, number, [], "node1", ["--users-file", str(users)]))
    node.start()
    app, viewer, wrong = tmp_path / "app", tmp_path / "viewer", tmp_path / "wrong"
    app.write_text("app secret\n")
    viewer.write_text("look only\r\n")
    wrong.write_text("nope\n")
    port = str(node.port)
    wait_until(lambda: cli("-p", port, "--user", "viewer", "--pass-file", str(viewer),
                           "STATUS").stdout.count(b"state serving") == 1,
               "the node to serve, asked as viewer")
    assert cli("-p", port, "--user", "app", "--pass-file", str(app), "SET", "k", "v").stdout == b"OK\n"
    read = cli("-p", port, "--user", "viewer", "--pass-file", str(viewer), "GET", "k")
    assert (read.returncode, read.stdout) == (0, b"v\n")
    denied = cli("-p", port, "--user", "viewer", "--pass-file", str(viewer), "SET", "k", "w")
    assert denied.returncode == 1 and denied.stdout.startswith(b"NOPERM")
    refused = cli("-p", port, "--user", "app", "--pass-file", str(wrong), "GET", "k")
    assert refused.returncode == 2 and b"WRONGPASS" in refused.stderr
    anonymous = cli("-p", port, "GET", "k")
    assert anonymous.returncode == 1 and anonymous.stdout.startswith(b"NOAUTH")


def test_tls_connection_verified_against_the_ca(cluster: Cluster, tmp_path: Path) -> None:
    """``--tls --cacert`` talks to a node's TLS port; without the CA the certificate is refused."""
    from tests.tlscerts import Authority, require_tls

    require_tls()
    ca = Authority(tmp_path, "cli-ca")
    cert, key = ca.issue("node1")
    port, tls_port = free_ports(2)
    node = cluster.add(NodeProcess(tmp_path, port, [], "node1", [
        "--tls-port", f"tcp:{tls_port}:interface=127.0.0.1", "--tls-cert", str(cert),
        "--tls-key", str(key)]))
    node.start().wait_ready()
    done = cli("-p", str(tls_port), "--tls", "--cacert", str(ca.path), "SET", "k", "over tls")
    assert (done.returncode, done.stdout) == (0, b"OK\n"), done.stderr
    assert cli("-p", str(port), "GET", "k").stdout == b"over tls\n"
    untrusted = cli("-p", str(tls_port), "--tls", "GET", "k")
    assert untrusted.returncode == 2 and b"CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


def test_dump_and_load_draw_progress_on_a_terminal(cluster: Cluster, tmp_path: Path) -> None:
    """On a terminal, dump and load draw a progress bar with a rate; piped, only the summary."""
    (node,) = cluster.start(1)
    with Connection("127.0.0.1", node.port) as conn:
        conn.pipeline([("SET", f"k{i}", "v") for i in range(100)])
    dump = tmp_path / "d.jsonl"
    term = Terminal(cli_argv("-p", str(node.port), "dump", str(dump)))
    assert term.finish() == 0
    assert b"dump [" + b"#" * 30 + b"] 100% 100 keys " in term.output
    assert b"keys/s" in term.output and b"dumped 100 keys" in term.output
    term = Terminal(cli_argv("-p", str(node.port), "load", str(dump)))
    assert term.finish() == 0
    assert b"] 100% " in term.output and b"bytes/s" in term.output
    piped = cli("-p", str(node.port), "load", str(dump))
    assert b"[" not in piped.stderr and piped.stderr.startswith(b"loaded 100 keys")


def test_dump_survives_keys_expiring_and_deleted_meanwhile(cluster: Cluster, tmp_path: Path) -> None:
    """Keys that expire or are deleted while the dump runs are left out or dumped whole;
    every key that stays is dumped exactly once."""
    (node,) = cluster.start(1)
    with Connection("127.0.0.1", node.port) as conn:
        conn.pipeline([("SET", f"stay{i}", "v") for i in range(3000)])
        conn.pipeline([("SET", f"brief{i}", "v", "PX", str(1 + i % 400)) for i in range(3000)])
        conn.pipeline([("SET", f"doomed{i}", "v") for i in range(3000)])
    dump = tmp_path / "d.jsonl"
    term = Terminal(cli_argv("-p", str(node.port), "dump", str(dump)))
    with Connection("127.0.0.1", node.port) as conn:  # delete while it dumps
        for start in range(0, 3000, 100):
            conn.call("DEL", *[f"doomed{i}" for i in range(start, start + 100)])
    assert term.finish() == 0, term.output
    records = [json.loads(line) for line in dump.read_text().splitlines()]
    keys = [record["key"] for record in records]
    assert len(keys) == len(set(keys))
    assert {f"stay{i}" for i in range(3000)} <= set(keys)
    assert all("expire_at_ms" in record for record in records if record["key"].startswith("brief"))
    assert all("expire_at_ms" not in record for record in records
               if not record["key"].startswith("brief"))
