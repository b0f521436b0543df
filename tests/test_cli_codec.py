"""The client's pure parts: RESP replies read, replies formatted, dump lines encoded and decoded."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distkv.cli.client import Connection, ProtocolError, ReplyError, RespMap, Status, encode
from distkv.cli.dumpload import decode_line, encode_line
from distkv.cli.format import quote, raw, render, tty


def replies(data: bytes) -> Connection:
    """A connection whose node has sent ``data`` (no socket)."""
    conn = Connection.__new__(Connection)
    conn._file = io.BytesIO(data)  # type: ignore[assignment]
    return conn


def test_reads_resp2_and_resp3_replies() -> None:
    """Every RESP2 type and RESP3's nil, double, boolean, map, set and verbatim string are read."""
    conn = replies(b"+OK\r\n-ERR no\r\n:-3\r\n$3\r\na\r\n\r\n$-1\r\n*2\r\n:1\r\n*-1\r\n"
                   b"_\r\n,1.5\r\n#t\r\n%1\r\n+k\r\n:2\r\n~1\r\n$0\r\n\r\n=7\r\ntxt:abc\r\n")
    got = [conn.read() for _ in range(12)]
    assert got == ["OK", "ERR no", -3, b"a\r\n", None, [1, None], None, 1.5, True,
                   ["k", 2], [b""], b"abc"]
    assert isinstance(got[0], Status) and isinstance(got[1], ReplyError)
    assert isinstance(got[9], RespMap)


@pytest.mark.parametrize("data", [b"", b"$5\r\nab\r\n", b"?x\r\n", b":12", b":x\r\n"])
def test_truncated_or_malformed_replies_raise(data: bytes) -> None:
    """A closed connection or bytes that are not RESP raise ProtocolError, never hang or crash."""
    with pytest.raises(ProtocolError):
        replies(data).read()


def test_requests_are_resp_arrays_of_bulk_strings() -> None:
    """Arguments are sent as bulk strings; str arguments keep argv's undecodable bytes."""
    assert encode(["SET", b"k\x00", "\udcff"]) == b"*3\r\n$3\r\nSET\r\n$2\r\nk\x00\r\n$1\r\n\xff\r\n"


def test_terminal_format_is_redis_clis() -> None:
    """Quoting, typed scalars, numbered and nested arrays as redis-cli prints them."""
    assert quote(b'a"\\\n\r\t\x07\x08\x00\xff ~') == '"a\\"\\\\\\n\\r\\t\\a\\b\\x00\\xff ~"'
    assert tty(None) == "(nil)" and tty(3) == "(integer) 3" and tty(ReplyError("ERR x")) == "(error) ERR x"
    assert tty([]) == "(empty array)"
    nested = [b"0", [b"a", [b"b"]] + [b"x"] * 9]
    assert tty(nested) == ('1) "0"\n2)  1) "a"\n    2) 1) "b"\n' + "".join(
        f'   {n:>2}) "x"\n' for n in range(3, 12))).rstrip("\n")
    assert render(Status("OK"), True) == b"OK\n"


def test_raw_format_is_redis_clis() -> None:
    """Piped: bytes as they are, nil as nothing, arrays one element a line, an error and a blank line."""
    assert raw([b"a", None, 5]) == b"a\n\n5"
    assert render(ReplyError("ERR x"), False) == b"ERR x\n\n"
    assert render(b"# Server\r\nx:1\r\n", True, report=True) == b"# Server\r\nx:1\r\n"
    assert render(b"node a", False, report=True) == b"node a\n"


@given(st.binary(), st.binary(), st.one_of(st.none(), st.integers(0, 1 << 50)))
def test_dump_lines_round_trip_any_bytes(key: bytes, value: bytes, expiry: object) -> None:
    """Any key and value, UTF-8 or not, and any expiry come back as they were, from one line."""
    line = encode_line(key, value, expiry)  # type: ignore[arg-type]
    assert "\n" not in line
    assert decode_line(line) == (key, value, expiry)
    record = json.loads(line)
    assert ("key" in record) == (key.decode("utf-8", "replace").encode("utf-8") == key)


@pytest.mark.parametrize("line,why", [
    ("[1]", "not a JSON object"), ('{"value":"v"}', "no key"),
    ('{"key":"k","value64":"!!"}', "not base64"),
    ('{"key":"k","value":"v","expire_at_ms":"soon"}', "not an integer"),
    ('{"key":"k","value":"v","expire_at_ms":true}', "not an integer"),
])
def test_bad_dump_lines_say_why(line: str, why: str) -> None:
    """A line that is not a dump record raises ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=why):
        decode_line(line)
