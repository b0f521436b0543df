"""``distkv dump FILE`` and ``distkv load FILE``: every key as a line of JSON.

One object per line: ``{"key": K, "value": V}``, plus ``"expire_at_ms": T``
(the expiry as Unix milliseconds, ``PEXPIRETIME``'s) for a key that has one.
Keys and values are bytes: one that is valid UTF-8 is written as a JSON string
under ``key``/``value``; any other is base64 (RFC 4648, with padding) under
``key64``/``value64``. ``-`` is stdout/stdin.

Dump walks ``SCAN`` (which returns every key present for the whole walk, at
most once) and reads each key with ``MULTI GET PEXPIRETIME EXEC``, pipelined a
batch at a time, so a value and its expiry are read together; a key deleted
or expired between the scan and the read is left out. Load sends ``SET key
value`` (``PXAT T`` with an expiry, so a key dumped with one expires at the
same moment; one already past by this machine's clock is skipped and
counted), pipelined in batches of
:data:`BATCH`, and reports how many keys it wrote. Both show a progress bar and
a rate on stderr when stderr is a terminal.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import time
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Dict, List, Optional, Sequence, Tuple, Union

from distkv.cli.client import ReplyError

if TYPE_CHECKING:
    from distkv.cli.main import Target

#: Keys per SCAN step, and per pipelined batch of load.
BATCH = 500


def encode_line(key: bytes, value: bytes, expire_at_ms: Optional[int]) -> str:
    record: Dict[str, Any] = {}
    for name, data in (("key", key), ("value", value)):
        try:
            record[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            record[name + "64"] = base64.b64encode(data).decode("ascii")
    if expire_at_ms is not None:
        record["expire_at_ms"] = expire_at_ms
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def decode_line(line: Union[str, bytes]) -> Tuple[bytes, bytes, Optional[int]]:
    """A dump line's key, value and expiry; ValueError if it is not one."""
    record = json.loads(line)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    out: List[bytes] = []
    for name in ("key", "value"):
        if isinstance(record.get(name), str):
            out.append(record[name].encode("utf-8"))
        elif isinstance(record.get(name + "64"), str):
            try:
                out.append(base64.b64decode(record[name + "64"], validate=True))
            except binascii.Error as e:
                raise ValueError(f"{name}64 is not base64: {e}") from None
        else:
            raise ValueError(f"no {name} or {name}64")
    expiry = record.get("expire_at_ms")
    if expiry is not None and (not isinstance(expiry, int) or isinstance(expiry, bool)):
        raise ValueError("expire_at_ms is not an integer")
    return out[0], out[1], expiry


class Progress:
    """A progress bar and a rate on a terminal; nothing elsewhere."""

    def __init__(self, what: str, total: int, unit: str, stream: IO[str]) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.stream = stream
        self.shown = stream.isatty()
        self.started = self._last = time.monotonic()

    def rate(self, done: int) -> float:
        return done / max(time.monotonic() - self.started, 1e-6)

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.shown or (now - self._last < 0.2 and not force):
            return
        self._last = now
        share = min(done / self.total, 1.0) if self.total else 1.0
        bar = "#" * int(share * 30)
        self.stream.write(f"\r{self.what} [{bar:<30}] {share:4.0%} {done} {self.unit} "
                          f"{self.rate(done):,.0f} {self.unit}/s ")
        self.stream.flush()

    def finish(self, done: int) -> None:
        if self.shown:
            self.update(done, force=True)
            self.stream.write("\n")


def dump(target: Target, path: str, report: IO[str]) -> int:
    """Write every key of the node to ``path``; 1 if the node refused something."""
    out: IO[str] = sys.stdout if path == "-" else open(path, "w", encoding="utf-8")
    written = expiring = 0
    try:
        with target.connect(timeout=60.0) as conn:
            total = conn.call("DBSIZE")
            progress = Progress("dump", total if isinstance(total, int) else 0, "keys", report)
            cursor = b"0"
            while True:
                reply = conn.call("SCAN", cursor, "COUNT", str(BATCH))
                if not isinstance(reply, list) or len(reply) != 2 \
                        or not isinstance(reply[0], bytes) or not isinstance(reply[1], list):
                    print(f"distkv: SCAN: {reply!r}", file=sys.stderr)
                    return 1
                cursor = reply[0]
                keys = [key for key in reply[1] if isinstance(key, bytes)]
                requests: List[Sequence[Union[str, bytes]]] = []
                for key in keys:
                    requests += [("MULTI",), ("GET", key), ("PEXPIRETIME", key), ("EXEC",)]
                replies = conn.pipeline(requests)
                for index, key in enumerate(keys):
                    pair = replies[4 * index + 3]
                    if not isinstance(pair, list) or len(pair) != 2:
                        print(f"distkv: reading {key!r}: {pair!r}", file=sys.stderr)
                        return 1
                    value, expiry = pair
                    if not isinstance(value, bytes) or not isinstance(expiry, int) \
                            or expiry == -2:
                        continue  # deleted or expired since the scan saw it
                    out.write(encode_line(key, value, expiry if expiry >= 0 else None) + "\n")
                    written += 1
                    expiring += expiry >= 0
                progress.update(written)
                if cursor == b"0":
                    break
            progress.finish(written)
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"dumped {written} keys ({expiring} with an expiry) in "
          f"{time.monotonic() - progress.started:.1f}s", file=report)
    return 0


def load(target: Target, path: str, report: IO[str]) -> int:
    """SET every key of the dump at ``path``; 1 if a line was bad or a SET refused."""
    source: BinaryIO = sys.stdin.buffer if path == "-" else open(path, "rb")
    size = os.fstat(source.fileno()).st_size if path != "-" else 0
    written = expiring = failed = expired = 0
    read = 0
    now_ms = int(time.time() * 1000)
    try:
        with target.connect(timeout=60.0) as conn:
            progress = Progress("load", size, "bytes", report)
            batch: List[Tuple[str, ...]] = []
            expiries: List[bool] = []
            number = 0

            def send() -> None:
                nonlocal written, expiring, failed
                for reply, with_expiry in zip(conn.pipeline(batch), expiries):
                    if isinstance(reply, ReplyError):
                        failed += 1
                        if failed <= 10:
                            print(f"distkv: SET refused: {reply}", file=sys.stderr)
                    else:
                        written += 1
                        expiring += with_expiry
                batch.clear()
                expiries.clear()
                progress.update(read)

            for line in source:
                number += 1
                read += len(line)
                if not line.strip():
                    continue
                try:
                    key, value, expiry = decode_line(line)
                except ValueError as e:
                    print(f"distkv: {path}:{number}: {e}", file=sys.stderr)
                    failed += 1
                    continue
                if expiry is not None and expiry <= now_ms:
                    expired += 1
                    continue
                request = ["SET", key, value]
                if expiry is not None:
                    request += ["PXAT", str(expiry)]
                batch.append(tuple(request))  # type: ignore[arg-type]
                expiries.append(expiry is not None)
                if len(batch) >= BATCH:
                    send()
            if batch:
                send()
            progress.finish(read)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    elapsed = time.monotonic() - progress.started
    print(f"loaded {written} keys ({expiring} with an expiry) in {elapsed:.1f}s, "
          f"{written / max(elapsed, 1e-6):,.0f} keys/s; {expired} already expired, "
          f"{failed} failed", file=report)
    return 1 if failed else 0
