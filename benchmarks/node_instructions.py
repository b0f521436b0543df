"""Instructions per request of a whole node serving real sockets, counted by callgrind.

``hotpath_instructions.py`` counts DistKV's own code with requests fed in
process; this script counts everything the node process executes in user
space (reactor, socket calls' Python side, parsing, dispatch, replies, and
whatever an option adds, e.g. ``--metrics-port``) while ``redis-benchmark``
drives it over loopback. The counts do not move with the machine's load, so
two node variants compare on a shared machine where req/s cannot (the
kernel's share, the same for both, is not counted: the ratios printed are an
upper bound of the cost as a share of the node's CPU).

    python benchmarks/node_instructions.py                         # plain against --metrics-port
    python benchmarks/node_instructions.py --requests 40000 --pipeline 16

Each variant: start the node under callgrind, warm up, zero the counters
(``callgrind_control -z``), run ``redis-benchmark -t set,get -n N -P P -c 50``,
dump (``callgrind_control -d``), and divide the total by the 2N requests.
Needs valgrind and redis-benchmark.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import HOST, default_twistd, free_port, stop_node, wait_listening  # noqa: E402

VARIANTS = {
    "plain": [],
    "metrics": ["--metrics-port", "{metrics_port}"],
}


def total_instructions(dump: str) -> int:
    with open(dump) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("no totals in " + dump)


def bench(port: int, requests: int, pipeline: int) -> None:
    done = subprocess.run(
        ["redis-benchmark", "-h", HOST, "-p", str(port), "-q", "-t", "set,get", "-n",
         str(requests), "-P", str(pipeline), "-c", "50"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=1800)
    if done.returncode:
        sys.exit(f"redis-benchmark failed: {done.stderr[-500:]!r}")


def measure(twistd: str, workdir: str, name: str, requests: int, pipeline: int) -> float:
    port, metrics_port = free_port(), free_port()
    extra = [arg.format(metrics_port=metrics_port) for arg in VARIANTS[name]]
    out = os.path.join(workdir, f"cg-{name}.out")
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
            twistd, "-n", "--pidfile=", "-l", os.path.join(workdir, name + ".log"), "distkv",
            "--port", f"tcp:{port}:interface={HOST}"] + extra
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_listening(proc, port, timeout=600).close()
        bench(port, max(2000, requests // 10), pipeline)  # warm-up, not counted
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                       capture_output=True)
        bench(port, requests, pipeline)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                       capture_output=True)
        dumps = sorted(glob.glob(out + ".*"), key=os.path.getmtime)
        if not dumps:
            raise RuntimeError("callgrind wrote no dump for " + name)
        return total_instructions(dumps[-1]) / (2 * requests)
    finally:
        stop_node(proc, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--twistd", default=default_twistd())
    parser.add_argument("--requests", type=int, default=20000, help="redis-benchmark -n")
    parser.add_argument("--pipeline", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "redis-benchmark"):
        if shutil.which(tool) is None:
            sys.exit(tool + " is not installed")
    workdir = tempfile.mkdtemp(prefix="distkv-node-instr-")
    try:
        results = {name: [] for name in VARIANTS}
        for rnd in range(args.rounds):
            for name in VARIANTS:
                per = measure(args.twistd, workdir, name, args.requests, args.pipeline)
                results[name].append(per)
                print(f"round {rnd + 1} {name:<8} {per:9.0f} instructions per request "
                      f"(-P {args.pipeline}, -n {args.requests} SET + GET)", flush=True)
        base = min(results["plain"])
        for name, values in results.items():
            best = min(values)
            print(f"{name:<8} {best:9.0f}  x{best / base:.3f} of plain")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
