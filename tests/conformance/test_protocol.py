"""Black-box conformance suite for the match-and-chat server.

Written only from /work/shared/PROTOCOL.md and the original Chinese API document
(/work/shared/seed/000_a844993ef25b6329.txt).  Every expectation below cites the
section of PROTOCOL.md it comes from.  The server's own docs were used only to learn
the names of its command-line flags.

The suite builds (or reuses) target/debug/matchchat-server, starts it on an
ephemeral loopback port with `--log-format json`, learns the address from the
`fields.local_addr` of its first log line, and stops it with SIGTERM.  Tests that
need short timeouts start their own server processes.  Every wait is bounded.

Run from the repository root:
    python3 -m pip install -r tests/conformance/requirements.txt
    python3 -m pytest -q tests/conformance
"""

from __future__ import annotations

import base64
import collections
import http.client
import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("MATCHCHAT_SERVER_BIN", ROOT / "target" / "debug" / "matchchat-server"))

T = 3.0  # default bound for a single expected frame / reply
QUIET = 0.5  # how long "nothing arrives" is watched

# ---------------------------------------------------------------- codes & texts (§7 table, §2, §4)
TXT = {
    20000: "success",
    20001: "匹配成功",
    20002: "聊天数据",
    20003: "对方已离开",
    40000: "参数缺失",
    40001: "参数错误",
    40003: "您有一场进行中的聊天房间",
    40004: "操作失败！未找到进行中的聊天房间",
    40009: "操作过于频繁",
    -1000: "协议错误",
    -1001: "方法不存在",
    -1002: "请求参数缺失",
    -20001: "系统处理中",
    -20002: "系统错误",
}

RE_SESSION = re.compile(r"[A-Za-z0-9]{40}")
RE_REQUEST_ID = re.compile(r"[0-9a-fA-F]{40}")
RE_ACCOUNT = re.compile(r"[A-Za-z0-9]{10}")
RE_PLAYER = RE_ACCOUNT  # §8.10
RE_ROOM = re.compile(r"[A-Za-z0-9]{32}")  # §8.10
RE_PUSH_ID = re.compile(r"[0-9a-f]{32}")  # §4

ABSENT = object()


# ================================================================ server process management


def _build_binary() -> Path:
    """`cargo build -p matchchat-server` (a no-op when up to date); reuse the binary if cargo is unavailable."""
    if os.environ.get("MATCHCHAT_SERVER_BIN"):
        assert BIN.exists(), f"MATCHCHAT_SERVER_BIN={BIN} does not exist"
        return BIN
    if shutil.which("cargo") and os.environ.get("MATCHCHAT_NO_BUILD") != "1":
        r = subprocess.run(
            ["cargo", "build", "-p", "matchchat-server"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=1800,
        )
        if r.returncode != 0 and not BIN.exists():
            raise RuntimeError("cargo build failed:\n" + r.stdout.decode(errors="replace")[-4000:])
    assert BIN.exists(), f"server binary not found at {BIN}"
    return BIN


class Server:
    """One server process on 127.0.0.1:<ephemeral>."""

    def __init__(self, binary: Path, *flags: str):
        self.flags = list(flags)
        self.proc = subprocess.Popen(
            [str(binary), "--bind", "127.0.0.1:0", "--log-format", "json", *flags],
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.log: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._pump, args=(stream,), daemon=True).start()
        self.addr = self._wait_addr(10.0)
        host, port = self.addr.rsplit(":", 1)
        assert host in ("127.0.0.1", "localhost", "::1", "[::1]"), f"not a loopback address: {self.addr}"
        self.host, self.port = host.strip("[]"), int(port)

    def _pump(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self.log.append(line)
            self._lines.put(line)

    def _wait_addr(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("server did not log its local_addr; log:\n" + "\n".join(self.log[-30:]))
            try:
                line = self._lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            addr = (obj.get("fields") or {}).get("local_addr") if isinstance(obj, dict) else None
            if addr:
                return str(addr)

    def sigterm(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def panics(self) -> list[str]:
        """Log lines of a Rust panic (the test command greps every server's log for them)."""
        return [line for line in self.log if "panicked at" in line]

    # ---- HTTP helpers
    def http(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def get_config_raw(self, body: bytes, ctype: str | None):
        headers = {"Content-Type": ctype} if ctype else {}
        return self.http("POST", "/app/get_config", body, headers)

    def get_config(self, obj, form: bool = False):
        if form:
            body = urllib.parse.urlencode(obj).encode() if not isinstance(obj, (bytes, str)) else obj
            if isinstance(body, str):
                body = body.encode()
            status, headers, data = self.get_config_raw(body, "application/x-www-form-urlencoded")
        else:
            body = json.dumps(obj, ensure_ascii=False).encode() if not isinstance(obj, (bytes, str)) else obj
            if isinstance(body, str):
                body = body.encode()
            status, headers, data = self.get_config_raw(body, "application/json")
        try:
            parsed = json.loads(data)
        except ValueError:
            raise AssertionError(f"get_config answered HTTP {status} with a non-JSON body: {data[:300]!r}")
        return status, parsed

    def session(self, pid: int = 1, zone: str | None = None) -> "Session":
        zone = zone if zone is not None else uniq_zone()
        status, body = self.get_config({"id": pid, "game_zone": zone})
        assert status == 200, (status, body)
        assert body["code"] == 1 and body["status"] == 1, body
        d = body["data"]
        return Session(d["session_id"], d["account"], pid, zone)

    def ws_url(self, session: str | None = None) -> str:
        url = f"ws://{self.host}:{self.port}/ws"
        if session is not None:
            url += "?session_id=" + urllib.parse.quote(session, safe="")
        return url


class Session:
    def __init__(self, sid, account, pid, zone):
        self.sid, self.account, self.pid, self.zone = sid, account, pid, zone


def uniq_zone() -> str:
    return "z" + uuid.uuid4().hex[:20]


# ================================================================ WebSocket client


def same_id(a, b) -> bool:
    return type(a) is type(b) and a == b


class Client:
    _seq = itertools.count(1)

    def __init__(self, srv: Server, session: "Session | str | None" = None):
        sid = session.sid if isinstance(session, Session) else session
        self.ws = ws_connect(
            srv.ws_url(sid),
            open_timeout=5,
            close_timeout=2,
            max_size=None,
            max_queue=None,
            compression=None,
            ping_interval=None,
            proxy=None,
        )
        self.inbox: collections.deque = collections.deque()

    # ---- sending
    def send_text(self, text: str):
        self.ws.send(text)

    def send_obj(self, obj):
        self.ws.send(json.dumps(obj, ensure_ascii=False))

    def req(self, method, params=ABSENT, id=None):
        if id is None:
            id = f"r{next(Client._seq)}"
        obj = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not ABSENT:
            obj["params"] = params
        self.send_obj(obj)
        return id

    # ---- receiving
    def recv(self, timeout: float = T) -> dict:
        if self.inbox:
            return self.inbox.popleft()
        try:
            raw = self.ws.recv(timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"no frame within {timeout}s")
        assert isinstance(raw, str), f"server sent a binary frame: {raw[:100]!r}"
        try:
            return json.loads(raw)
        except ValueError:
            raise AssertionError(f"server sent a non-JSON text frame: {raw[:200]!r}")

    def wait_reply(self, id, timeout: float = T) -> dict:
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no reply with id {id!r} within {timeout}s; other frames: {skipped}")
                f = self.recv(remaining)
                if isinstance(f, dict) and "id" in f and same_id(f["id"], id):
                    return f
                skipped.append(f)
        finally:
            self.inbox.extendleft(reversed(skipped))

    def call(self, method, params=ABSENT, id=None, timeout: float = T) -> dict:
        return self.wait_reply(self.req(method, params, id), timeout)

    def silence(self, seconds: float = QUIET):
        assert not self.inbox, f"unexpected frames: {list(self.inbox)}"
        try:
            raw = self.ws.recv(timeout=seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected no frame, got {raw[:300]!r}")

    def wait_close(self, timeout: float = T):
        """Read until the connection closes; return (close code or None, frames read before)."""
        frames = list(self.inbox)
        self.inbox.clear()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"connection not closed within {timeout}s; frames: {frames}")
            try:
                frames.append(self.ws.recv(timeout=remaining))
            except TimeoutError:
                continue
            except ConnectionClosed as e:
                return (e.rcvd.code if e.rcvd is not None else None), frames

    def alive(self) -> bool:
        r = self.call("game/cancel_match", [])
        return r.get("result", {}).get("code") == 20000

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass


# ================================================================ envelope assertions


def expect_result(frame, code, data=ABSENT, id=ABSENT) -> dict:
    """§4 business response: {"jsonrpc":"2.0","result":{"code","message","data"},"id"}."""
    assert isinstance(frame, dict), frame
    assert set(frame) == {"jsonrpc", "result", "id"}, f"envelope members: {frame}"
    assert frame["jsonrpc"] == "2.0", frame
    res = frame["result"]
    assert isinstance(res, dict) and set(res) == {"code", "message", "data"}, f"result members: {frame}"
    assert res["code"] == code and type(res["code"]) is int, f"expected code {code}: {frame}"
    assert res["message"] == TXT[code], f"expected message {TXT[code]!r}: {frame}"
    assert isinstance(res["data"], (dict, list)), f"data must be an object or array: {frame}"
    if data is not ABSENT:
        assert res["data"] == data and type(res["data"]) is type(data), f"expected data {data!r}: {frame}"
    if id is not ABSENT:
        assert same_id(frame["id"], id), f"expected id {id!r}: {frame}"
    return res["data"]


def expect_push(frame, code, data=ABSENT) -> dict:
    """§4 push: same result shape, fresh server id of 32 lowercase hex."""
    d = expect_result(frame, code, data)
    assert isinstance(frame["id"], str) and RE_PUSH_ID.fullmatch(frame["id"]), f"push id: {frame}"
    return d


def expect_error(frame, code, id):
    """§4 global error: {"jsonrpc":"2.0","error":{"code","message"},"id":<id or null>}."""
    assert isinstance(frame, dict), frame
    assert set(frame) == {"jsonrpc", "error", "id"}, f"envelope members: {frame}"
    assert frame["jsonrpc"] == "2.0", frame
    err = frame["error"]
    assert isinstance(err, dict) and {"code", "message"} <= set(err) <= {"code", "message", "data"}, frame
    assert err["code"] == code and type(err["code"]) is int, f"expected error code {code}: {frame}"
    assert err["message"] == TXT[code], f"expected message {TXT[code]!r}: {frame}"
    assert same_id(frame["id"], id), f"expected id {id!r}: {frame}"


def expect_http_fail(status, body, code, http_status):
    """§2: failures use the same envelope with status 0 and the code in code, msg and message."""
    assert status == http_status, f"expected HTTP {http_status}, got {status}: {body}"
    assert isinstance(body, dict), body
    assert {"code", "status", "msg", "message"} <= set(body), body
    assert body["code"] == code and body["status"] == 0, body
    assert body["msg"] == TXT[code] and body["message"] == TXT[code], body


# ================================================================ fixtures


@pytest.fixture(scope="session")
def binary():
    return _build_binary()


@pytest.fixture(scope="module")
def srv(binary):
    """A default-configured server shared by a module's tests (isolated pools via unique zones)."""
    s = Server(binary)
    yield s
    s.stop()
    assert not s.panics(), "the server panicked:\n" + "\n".join(s.panics())


@pytest.fixture
def spawn(binary):
    servers = []

    def _spawn(*flags):
        s = Server(binary, *flags)
        servers.append(s)
        return s

    yield _spawn
    for s in servers:
        s.stop()
    panics = [line for s in servers for line in s.panics()]
    assert not panics, "a server panicked:\n" + "\n".join(panics)


@pytest.fixture
def fresh(spawn):
    """A default-configured server of the test's own (for tests using the anonymous pool)."""
    return spawn()


@pytest.fixture
def ws():
    opened = []

    def _open(server, session=None):
        c = Client(server, session)
        opened.append(c)
        return c

    yield _open
    for c in opened:
        c.close()


# ================================================================ scenario helpers


def form_room(clients):
    """All but the last queue first; the last completes the room.  Checks §5 match_player and §8.7."""
    for c in clients[:-1]:
        expect_result(c.call("game/match_player", []), 20000, [])
    last = clients[-1]
    rid = last.req("game/match_player", [])
    # §8.7: the completing player's own 20000 comes before its 20001.
    expect_result(last.recv(), 20000, [], id=rid)
    infos = [expect_push(c.recv(), 20001) for c in clients]
    room_id = infos[0]["room_id"]
    assert isinstance(room_id, str) and RE_ROOM.fullmatch(room_id), infos
    pids = []
    for d in infos:
        assert {"room_id", "player_id", "peer_ids"} <= set(d), d
        assert d["room_id"] == room_id, f"room_id differs between members: {infos}"
        assert isinstance(d["player_id"], str) and RE_PLAYER.fullmatch(d["player_id"]), d
        pids.append(d["player_id"])
    assert len(set(pids)) == len(pids), f"player ids not distinct: {infos}"
    for d in infos:
        assert isinstance(d["peer_ids"], list), d
        assert sorted(d["peer_ids"]) == sorted(p for p in pids if p != d["player_id"]), infos
    return room_id, pids


def chat(sender, others, msg, sn, sender_id=None):
    """§5 send_chat_msg success: 20002 reply with the request's id, same result pushed to the others."""
    rid = sender.req("game/send_chat_msg", {"chat_msg": msg, "chat_sn": sn})
    reply = sender.recv()
    d = expect_result(reply, 20002, id=rid)
    assert d.get("chat_msg") == msg and d.get("chat_sn") == sn, reply
    assert isinstance(d.get("send_player_id"), str), reply
    if sender_id is not None:
        assert d["send_player_id"] == sender_id, reply
    for o in others:
        p = o.recv()
        expect_push(p, 20002)
        assert p["result"] == reply["result"], f"push differs from reply: {p} vs {reply}"
    return reply


def pad_request(total: int, id="big") -> str:
    head = json.dumps({"jsonrpc": "2.0", "id": id, "method": "game/cancel_match", "params": []})
    body = head[:-1]
    text = body + " " * (total - len(body) - 1) + "}"
    assert len(text.encode()) == total
    return text


# ================================================================ raw WebSocket (to observe pings / control pongs)


class RawWS:
    def __init__(self, srv: Server, path="/ws"):
        self.sock = socket.create_connection((srv.host, srv.port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {srv.host}:{srv.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            assert chunk, "EOF during handshake"
            buf += chunk
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        assert b" 101 " in status + b" ", status

    def _read(self, n, deadline):
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, timeout):
        """(opcode, payload); raises EOFError on TCP close, TimeoutError on timeout."""
        deadline = time.monotonic() + timeout
        b0, b1 = self._read(2, deadline)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read(2, deadline))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read(8, deadline))
        mask = self._read(4, deadline) if b1 & 0x80 else None
        payload = self._read(n, deadline)
        if mask:
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        return b0 & 0x0F, payload

    def send_frame(self, opcode, payload: bytes):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        self.sock.sendall(head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ================================================================================================
# §1 transports
# ================================================================================================


def test_healthz(srv):
    status, _, body = srv.http("GET", "/healthz")
    assert status == 200 and body.strip() == b"ok", (status, body)


_PROM_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_PROM_LABELS = r'\{\s*(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:\\.|[^"\\])*"\s*(?:,\s*)?)*\}'
_PROM_VALUE = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?|NaN|[-+]?Inf)"
RE_PROM_SAMPLE = re.compile(rf"({_PROM_NAME})(?:{_PROM_LABELS})? {_PROM_VALUE}(?: -?[0-9]+)?")
RE_PROM_TYPE = re.compile(rf"# TYPE {_PROM_NAME} (counter|gauge|histogram|summary|untyped)")
RE_PROM_HELP = re.compile(rf"# HELP {_PROM_NAME}( .*)?")


def test_metrics_is_prometheus_text(srv):
    status, headers, body = srv.http("GET", "/metrics")
    assert status == 200, status
    assert headers.get("content-type", "").startswith("text/plain"), headers
    text = body.decode("utf-8")
    samples = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE"):
            assert RE_PROM_TYPE.fullmatch(line), f"bad TYPE line: {line!r}"
        elif line.startswith("# HELP"):
            assert RE_PROM_HELP.fullmatch(line), f"bad HELP line: {line!r}"
        elif line.startswith("#"):
            continue
        else:
            assert RE_PROM_SAMPLE.fullmatch(line), f"not a Prometheus sample line: {line!r}"
            samples += 1
    assert samples >= 1, text


def test_static_client_served_at_root(spawn, tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>conformance</title>", encoding="utf-8")
    (tmp_path / "app-123.js").write_text("console.log('conformance');", encoding="utf-8")
    s = spawn("--static-dir", str(tmp_path))
    status, _, body = s.http("GET", "/")
    assert status == 200 and body == b"<!doctype html><title>conformance</title>", (status, body[:200])
    status, _, body = s.http("GET", "/app-123.js")
    assert status == 200 and body == b"console.log('conformance');", (status, body[:200])


def test_ws_anonymous_and_with_session(srv, ws):
    a = ws(srv)
    assert a.alive()
    sess = srv.session()
    b = ws(srv, sess)
    assert b.alive()


# ================================================================================================
# §2 POST /app/get_config
# ================================================================================================


def _check_success(status, body):
    assert status == 200, (status, body)
    assert set(body) == {"code", "status", "msg", "message", "data"}, body
    assert body["code"] == 1 and body["status"] == 1 and body["msg"] == "" and body["message"] == "", body
    d = body["data"]
    assert isinstance(d, dict) and {"session_id", "request_id", "account"} <= set(d), body
    assert isinstance(d["session_id"], str) and RE_SESSION.fullmatch(d["session_id"]), body
    assert isinstance(d["request_id"], str) and RE_REQUEST_ID.fullmatch(d["request_id"]), body
    assert isinstance(d["account"], str) and RE_ACCOUNT.fullmatch(d["account"]), body
    return d


def test_get_config_json_success(srv):
    _check_success(*srv.get_config({"id": 1, "game_zone": "cn-east"}))


def test_get_config_json_with_charset(srv):
    status, _, data = srv.get_config_raw(
        json.dumps({"id": 1, "game_zone": "cn-east"}).encode(), "application/json; charset=utf-8"
    )
    _check_success(status, json.loads(data))


def test_get_config_form_success(srv):
    _check_success(*srv.get_config("id=1&game_zone=cn-east", form=True))
    _check_success(*srv.get_config({"id": "7", "game_zone": "区服-东"}, form=True))


def test_get_config_ids_unique(srv):
    ds = [_check_success(*srv.get_config({"id": 1, "game_zone": "cn-east"})) for _ in range(3)]
    assert len({d["session_id"] for d in ds}) == 3
    assert len({d["request_id"] for d in ds}) == 3
    assert len({d["account"] for d in ds}) == 3


@pytest.mark.parametrize(
    "body",
    [
        {"id": 0, "game_zone": "cn-east"},
        {"id": 2147483647, "game_zone": "cn-east"},
        {"id": 1, "game_zone": "z" * 64},
        {"id": 1, "game_zone": "区" * 64},  # 64 Unicode scalar values (§8.3), 192 bytes
        {"id": 1, "game_zone": "😀" * 64},
        {"id": 1, "game_zone": "default"},
    ],
    ids=["id0", "idmax", "zone64", "zone64cjk", "zone64emoji", "default"],
)
def test_get_config_boundaries_accepted(srv, body):
    _check_success(*srv.get_config(body))


BAD_JSON_BODIES = [
    ({"game_zone": "cn-east"}, "id-missing"),
    ({"id": 1}, "zone-missing"),
    ({}, "both-missing"),
    ({"id": "1", "game_zone": "cn-east"}, "id-string"),
    ({"id": 1.5, "game_zone": "cn-east"}, "id-float"),
    (b'{"id": 1.0, "game_zone": "cn-east"}', "id-float-1.0"),
    ({"id": -1, "game_zone": "cn-east"}, "id-negative"),
    ({"id": 2147483648, "game_zone": "cn-east"}, "id-too-large"),
    ({"id": 99999999999999999999, "game_zone": "cn-east"}, "id-huge"),
    ({"id": True, "game_zone": "cn-east"}, "id-bool"),
    ({"id": None, "game_zone": "cn-east"}, "id-null"),
    ({"id": [1], "game_zone": "cn-east"}, "id-array"),
    ({"id": {}, "game_zone": "cn-east"}, "id-object"),
    ({"id": 1, "game_zone": ""}, "zone-empty"),
    ({"id": 1, "game_zone": "z" * 65}, "zone-65"),
    ({"id": 1, "game_zone": "区" * 65}, "zone-65cjk"),
    ({"id": 1, "game_zone": 5}, "zone-number"),
    ({"id": 1, "game_zone": None}, "zone-null"),
    ({"id": 1, "game_zone": ["cn-east"]}, "zone-array"),
    ({"id": 1, "game_zone": True}, "zone-bool"),
]


@pytest.mark.parametrize("body", [b for b, _ in BAD_JSON_BODIES], ids=[i for _, i in BAD_JSON_BODIES])
def test_get_config_json_bad_params(srv, body):
    status, resp = srv.get_config(body)
    expect_http_fail(status, resp, -1002, 400)


BAD_FORM_BODIES = [
    ("game_zone=cn-east", "id-missing"),
    ("id=1", "zone-missing"),
    ("", "empty-body"),
    ("id=abc&game_zone=cn-east", "id-string"),
    ("id=1.5&game_zone=cn-east", "id-float"),
    ("id=1.0&game_zone=cn-east", "id-float-1.0"),
    ("id=-1&game_zone=cn-east", "id-negative"),
    ("id=2147483648&game_zone=cn-east", "id-too-large"),
    ("id=&game_zone=cn-east", "id-empty"),
    ("id=1&game_zone=", "zone-empty"),
    ("id=1&game_zone=" + "z" * 65, "zone-65"),
]


@pytest.mark.parametrize("body", [b for b, _ in BAD_FORM_BODIES], ids=[i for _, i in BAD_FORM_BODIES])
def test_get_config_form_bad_params(srv, body):
    status, resp = srv.get_config(body, form=True)
    expect_http_fail(status, resp, -1002, 400)


@pytest.mark.parametrize("body", [b"not json", b"[]", b'"x"', b"{", b"null"], ids=["garbage", "array", "string", "truncated", "null"])
def test_get_config_body_not_an_object(srv, body):
    """§2: `id`/`game_zone` cannot be read, i.e. missing -> -1002 / 400."""
    status, resp = srv.get_config(body)
    expect_http_fail(status, resp, -1002, 400)


def test_get_config_over_capacity_is_20001(spawn):
    """§2 -20001 503 'over capacity' (the server's --max-sessions bound)."""
    s = spawn("--max-sessions", "2")
    s.session()
    s.session()
    status, resp = s.get_config({"id": 1, "game_zone": "cn-east"})
    expect_http_fail(status, resp, -20001, 503)


def test_get_config_draining_is_20001(spawn):
    """§2 -20001 503 while draining after SIGTERM (skipped if no HTTP answer can be had once draining)."""
    s = spawn("--shutdown-grace-ms", "3000")
    # A raw connection that never answers the close handshake keeps the server draining.
    raw = RawWS(s)
    try:
        raw.send_frame(0x1, _msg("warm", params=[]).encode())
        assert b'"warm"' in raw.recv_frame(T)[1]  # the connection is fully registered
        s.sigterm()
        observed = None
        seen_200 = 0
        errors = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                status, resp = s.get_config({"id": 1, "game_zone": "cn-east"})
            except (OSError, http.client.HTTPException) as e:
                errors.append(repr(e))
                if isinstance(e, ConnectionRefusedError):
                    break  # listener gone
                time.sleep(0.05)
                continue
            if status == 200:  # the signal may not have been handled yet
                seen_200 += 1
                time.sleep(0.05)
                continue
            observed = (status, resp)
            break
        if observed is None:
            if seen_200 and time.monotonic() >= deadline:
                pytest.fail("get_config kept answering 200 for 2 s after SIGTERM")
            pytest.skip(f"no HTTP answer once draining started (listener closed at once): {errors[:3]}")
        expect_http_fail(*observed, -20001, 503)
    finally:
        raw.close()


# ================================================================================================
# §3 WebSocket session
# ================================================================================================


@pytest.mark.parametrize("sid", ["", "nosuchsession", "A" * 40, "0123456789abcdefghijABCDEFGHIJ0123456789"])
def test_unknown_session_is_401(srv, sid):
    with pytest.raises(InvalidStatus) as ei:
        Client(srv, sid)
    assert ei.value.response.status_code == 401


def test_session_player_id_is_account(srv, ws):
    """§2 account is the player's id; §5 20001 player_id / 20002 send_player_id are that id."""
    zone = uniq_zone()
    sa, sb = srv.session(3, zone), srv.session(3, zone)
    a, b = ws(srv, sa), ws(srv, sb)
    _, pids = form_room([a, b])
    assert pids == [sa.account, sb.account]
    chat(a, [b], "hi", "sn-1", sender_id=sa.account)
    chat(b, [a], "yo", "sn-2", sender_id=sb.account)


def test_takeover_closes_old_with_4001_and_new_gets_20001(srv, ws):
    zone = uniq_zone()
    sa, sb = srv.session(1, zone), srv.session(1, zone)
    a1, b = ws(srv, sa), ws(srv, sb)
    room_id, _ = form_room([a1, b])
    a2 = ws(srv, sa)
    code, frames = a1.wait_close()
    assert code == 4001, (code, frames)
    # §3 / §8.12: the new connection inherits the room: 20001 again, same room.
    d = expect_push(a2.recv(), 20001)
    assert d["room_id"] == room_id and d["player_id"] == sa.account and d["peer_ids"] == [sb.account], d
    a2.silence()
    b.silence()  # a takeover is not a departure
    chat(b, [a2], "after takeover", "t-1", sender_id=sb.account)
    chat(a2, [b], "from new conn", "t-2", sender_id=sa.account)


def test_takeover_outside_room(srv, ws):
    s = srv.session()
    a1 = ws(srv, s)
    assert a1.alive()
    a2 = ws(srv, s)
    code, _ = a1.wait_close()
    assert code == 4001
    a2.silence()
    assert a2.alive()


def test_takeover_inherits_missed_messages(srv, ws):
    """§8.12: takeover of a session whose previous connection is gone (in grace) = resume."""
    zone = uniq_zone()
    sa, sb = srv.session(1, zone), srv.session(1, zone)
    a1, b = ws(srv, sa), ws(srv, sb)
    room_id, _ = form_room([a1, b])
    a1.close()
    time.sleep(0.1)
    r1 = chat(b, [], "m1", "k1")
    a2 = ws(srv, sa)
    d = expect_push(a2.recv(), 20001)
    assert d["room_id"] == room_id
    p = a2.recv()
    expect_push(p, 20002)
    assert p["result"] == r1["result"]
    a2.silence()


def _msg(id, method="game/cancel_match", params=ABSENT, jsonrpc="2.0"):
    obj = {}
    if jsonrpc is not ABSENT:
        obj["jsonrpc"] = jsonrpc
    if id is not ABSENT:
        obj["id"] = id
    if method is not ABSENT:
        obj["method"] = method
    if params is not ABSENT:
        obj["params"] = params
    return json.dumps(obj)


def test_exactly_64k_frame_accepted(srv, ws):
    c = ws(srv)
    c.send_text(pad_request(65536, "big"))
    expect_result(c.wait_reply("big"), 20000, id="big")
    assert c.alive()


def test_frame_over_64k_closes_1009(srv, ws):
    c = ws(srv)
    try:
        c.send_text(pad_request(65537, "big"))
    except ConnectionClosed:
        pass
    code, frames = c.wait_close()
    assert code == 1009, (code, frames)


def test_fragmented_message_over_64k_closes_1009(srv, ws):
    """§8.5: the limit applies to the whole reassembled message."""
    c = ws(srv)
    text = pad_request(65537 + 1000, "frag")
    parts = [text[i : i + 20000] for i in range(0, len(text), 20000)]
    try:
        c.ws.send(parts)
    except ConnectionClosed:
        pass
    code, frames = c.wait_close()
    assert code == 1009, (code, frames)


def test_fragmented_message_of_exactly_64k_accepted(srv, ws):
    c = ws(srv)
    text = pad_request(65536, "frag64")
    c.ws.send([text[i : i + 16000] for i in range(0, len(text), 16000)])
    expect_result(c.wait_reply("frag64"), 20000, id="frag64")


def test_binary_frame_is_protocol_error_id_null(srv, ws):
    c = ws(srv)
    c.ws.send(_msg("bin").encode())  # bytes -> binary frame, even though it holds a readable id
    expect_error(c.recv(), -1000, None)
    assert c.alive()
    c.ws.send(b"\x00\x01\x02")
    expect_error(c.recv(), -1000, None)
    assert c.alive()


# ---- §3 / §8.6 liveness


def test_server_pings_and_pong_counts_as_activity(spawn):
    s = spawn("--ping-interval-ms", "200", "--idle-timeout-ms", "1000")
    raw = RawWS(s)
    try:
        pings = 0
        deadline = time.monotonic() + 2.6
        while time.monotonic() < deadline:
            try:
                op, payload = raw.recv_frame(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            except EOFError:
                pytest.fail("connection dropped although the client answered every ping")
            assert op != 0x8, f"server closed although the client answered every ping: {payload!r}"
            if op == 0x9:
                pings += 1
                raw.send_frame(0xA, payload)
        assert pings >= 3, f"server sent {pings} pings in 2.6 s with a 200 ms interval"
        raw.send_frame(0x1, _msg("alive", params=[]).encode())
        deadline = time.monotonic() + T
        while True:
            op, payload = raw.recv_frame(deadline - time.monotonic())
            if op == 0x9:
                raw.send_frame(0xA, payload)
                continue
            assert op == 0x1, (op, payload)
            expect_result(json.loads(payload), 20000, id="alive")
            break
    finally:
        raw.close()


def test_silent_connection_dropped(spawn):
    s = spawn("--ping-interval-ms", "200", "--idle-timeout-ms", "1000")
    raw = RawWS(s)
    t0 = time.monotonic()
    try:
        dropped_at = None
        while time.monotonic() - t0 < 4.0:
            try:
                op, _ = raw.recv_frame(4.0 - (time.monotonic() - t0))
            except (EOFError, ConnectionResetError):
                dropped_at = time.monotonic()
                break
            except TimeoutError:
                break
            if op == 0x8:
                dropped_at = time.monotonic()
                break
        assert dropped_at is not None, "a silent connection was not dropped within 4 s (idle timeout 1 s)"
        assert dropped_at - t0 >= 0.8, f"dropped after only {dropped_at - t0:.2f}s (idle timeout 1 s)"
    finally:
        raw.close()


def test_text_frames_count_as_activity(spawn, ws):
    s = spawn("--ping-interval-ms", "60000", "--idle-timeout-ms", "1000")
    c = ws(s)
    t0 = time.monotonic()
    last_activity = t0
    while time.monotonic() - t0 < 2.5:
        assert c.alive()
        last_activity = time.monotonic()
        time.sleep(0.3)
    # The idle clock starts at the last frame the server read, not at the end of the loop
    # (which can be up to 0.3 s later); measuring from the loop's end flaked in CI.
    code, _ = c.wait_close(4.0)
    idle_for = time.monotonic() - last_activity
    assert code is not None, "the connection was not dropped after going quiet"
    assert idle_for >= 0.8, f"dropped {idle_for:.2f}s after the last frame (idle timeout 1 s)"


# ================================================================================================
# §4 envelopes, global errors, id echo
# ================================================================================================

ENVELOPE_CASES = [
    # (frame text, expected code, expected id)
    ("hello", -1000, None),
    ("", -1000, None),
    ("{", -1000, None),
    ('{"jsonrpc":"2.0","id":"x","method":"game/cancel_match","params":[]', -1000, None),
    ("123", -1000, None),
    ('"str"', -1000, None),
    ("null", -1000, None),
    ("true", -1000, None),
    ("[]", -1000, None),
    ("[" + _msg("b1", params=[]) + "]", -1000, None),
    ("[" + _msg("b1", params=[]) + "," + _msg("b2", params=[]) + "]", -1000, None),
    (_msg(1, params=[], jsonrpc=ABSENT), -1000, 1),
    (_msg("j", params=[], jsonrpc="1.0"), -1000, "j"),
    (_msg("j", params=[], jsonrpc=2.0), -1000, "j"),
    (_msg("j", params=[], jsonrpc=None), -1000, "j"),
    (_msg(ABSENT, params=[]), -1000, None),
    (_msg(None, params=[]), -1000, None),
    (_msg(True, params=[]), -1000, None),
    (_msg({}, params=[]), -1000, None),
    (_msg([1], params=[]), -1000, None),
    (_msg("m", method=ABSENT, params=[]), -1000, "m"),
    (_msg("m", method=5, params=[]), -1000, "m"),
    (_msg("m", method=None, params=[]), -1000, "m"),
    (_msg("m", method=["game/cancel_match"], params=[]), -1000, "m"),
    (_msg(7, method="game/nope", params=[]), -1001, 7),
    (_msg("u", method="", params=[]), -1001, "u"),
    (_msg("u", method="GAME/MATCH_PLAYER", params=[]), -1001, "u"),
    (_msg("u", method="match_player", params=[]), -1001, "u"),
    (_msg("u", method="game/match_player ", params=[]), -1001, "u"),
    (_msg("p", method="game/match_player"), -1002, "p"),
    (_msg("p", method="game/send_chat_msg"), -1002, "p"),
    (_msg("p", method="game/cancel_match"), -1002, "p"),
    (_msg("p", method="game/leave_chat"), -1002, "p"),
    (_msg("p", method="game/match_player", params=None), -1002, "p"),
    (_msg("p", method="game/send_chat_msg", params=None), -1002, "p"),
    (_msg("p", method="game/match_player", params="x"), -1002, "p"),
    (_msg("p", method="game/send_chat_msg", params="x"), -1002, "p"),
    (_msg("p", method="game/cancel_match", params=5), -1002, "p"),
    (_msg("p", method="game/leave_chat", params=True), -1002, "p"),
    # §8.1 order: -1000 before -1001 before -1002
    (_msg("o", method="game/nope", jsonrpc="1.0"), -1000, "o"),
    (_msg(None, method="game/nope"), -1000, None),
    (_msg("o", method=ABSENT, params=ABSENT), -1000, "o"),
    (_msg("o", method="game/nope"), -1001, "o"),
    (_msg("o", method="game/nope", params="x"), -1001, "o"),
]


@pytest.mark.parametrize("text,code,id", ENVELOPE_CASES, ids=[f"{i}:{c[0][:40]}" for i, c in enumerate(ENVELOPE_CASES)])
def test_global_errors(srv, ws, text, code, id):
    c = ws(srv)
    c.send_text(text)
    expect_error(c.recv(), code, id)
    c.silence(0.2)
    assert c.alive(), "the connection must stay open after a global error (§4)"


@pytest.mark.parametrize(
    "id",
    ["abc", "", "XQPieFsDzettF6HzH8mE682fZMT7336w", "中文😀", 'q"b\\s\u0001', 0, 7, -3, 1.5, 9007199254740993],
    ids=["str", "empty-str", "seed-id", "unicode", "escapes", "zero", "int", "negative", "float", "bigint"],
)
def test_reply_echoes_request_id(srv, ws, id):
    c = ws(srv)
    c.send_text(_msg(id, params=[]))
    expect_result(c.recv(), 20000, id=id)


def test_seed_match_player_example(srv, ws):
    """The seed's 匹配玩家 request and its example response."""
    c = ws(srv)
    c.send_text('{"id":"XQPieFsDzettF6HzH8mE682fZMT7336w","jsonrpc":"2.0","method":"game/match_player","params":[]}')
    assert c.recv() == {
        "jsonrpc": "2.0",
        "result": {"code": 20000, "message": "success", "data": []},
        "id": "XQPieFsDzettF6HzH8mE682fZMT7336w",
    }


# ================================================================================================
# §5 game/match_player
# ================================================================================================


def test_match_player_params_object_accepted(srv, ws):
    c = ws(srv, srv.session())
    expect_result(c.call("game/match_player", {}), 20000, [])


def test_cancel_and_leave_accept_object_params(srv, ws):
    """§4: params may be an object or an array."""
    c = ws(srv)
    expect_result(c.call("game/cancel_match", {}, id="co"), 20000, id="co")
    expect_result(c.call("game/leave_chat", {}, id="lo"), 40004, {}, id="lo")


def test_match_and_push(fresh, ws):
    a, b = ws(fresh), ws(fresh)
    room_id, pids = form_room([a, b])
    a.silence()
    b.silence()


def test_match_player_idempotent(srv, ws):
    zone = uniq_zone()
    a = ws(srv, srv.session(1, zone))
    for _ in range(3):
        expect_result(a.call("game/match_player", []), 20000, [])
    a.silence()  # never matched with itself
    b = ws(srv, srv.session(1, zone))
    form_room_with_queued(a, b)
    a.silence()  # exactly one 20001
    b.silence()


def form_room_with_queued(queued, last):
    rid = last.req("game/match_player", [])
    expect_result(last.recv(), 20000, [], id=rid)
    d1 = expect_push(queued.recv(), 20001)
    d2 = expect_push(last.recv(), 20001)
    assert d1["room_id"] == d2["room_id"] and RE_ROOM.fullmatch(d1["room_id"])
    assert d1["peer_ids"] == [d2["player_id"]] and d2["peer_ids"] == [d1["player_id"]]
    return d1["room_id"]


def test_match_player_in_room_is_40003(srv, ws):
    zone = uniq_zone()
    a, b = ws(srv, srv.session(1, zone)), ws(srv, srv.session(1, zone))
    form_room([a, b])
    expect_result(a.call("game/match_player", []), 40003, {})
    expect_result(b.call("game/match_player", {}), 40003, {})
    # §8.1: -1002 wins over the state check
    expect_error(a.call("game/match_player", id="np"), -1002, "np")
    a.silence()
    b.silence()


def test_zones_never_mix(srv, ws):
    east, west = uniq_zone(), uniq_zone()
    a = ws(srv, srv.session(1, east))
    b = ws(srv, srv.session(1, west))
    c = ws(srv, srv.session(2, east))
    for x in (a, b, c):
        expect_result(x.call("game/match_player", []), 20000, [])
    for x in (a, b, c):
        x.silence(0.3)
    d = ws(srv, srv.session(1, east))
    form_room_with_queued(a, d)
    e = ws(srv, srv.session(2, east))
    form_room_with_queued(c, e)
    b.silence()


def test_zones_never_mix_with_anonymous_pool(fresh, ws):
    anon = ws(fresh)
    s = ws(fresh, fresh.session(1, "default"))  # (1, "default") is not the anonymous pool (0, "default")
    expect_result(anon.call("game/match_player", []), 20000, [])
    expect_result(s.call("game/match_player", []), 20000, [])
    anon.silence()
    s.silence()


def test_session_zero_default_shares_anonymous_pool(fresh, ws):
    """§8.10."""
    sess = fresh.session(0, "default")
    anon = ws(fresh)
    s = ws(fresh, sess)
    expect_result(anon.call("game/match_player", []), 20000, [])
    form_room_with_queued(anon, s)


def test_anonymous_ids_are_fresh(fresh, ws):
    a, b = ws(fresh), ws(fresh)
    _, pids1 = form_room([a, b])
    c, d = ws(fresh), ws(fresh)
    _, pids2 = form_room([c, d])
    assert len(set(pids1 + pids2)) == 4


# ================================================================================================
# §5 game/send_chat_msg
# ================================================================================================

SEND_PARAM_CASES = [
    ({}, 40000, "empty-object"),
    ([], 40000, "positional-empty"),
    ({"chat_msg": "a"}, 40000, "sn-absent"),
    ({"chat_sn": "s"}, 40000, "msg-absent"),
    ({"chat_msg": None, "chat_sn": "s"}, 40000, "msg-null"),
    ({"chat_msg": "a", "chat_sn": None}, 40000, "sn-null"),
    ({"chat_msg": None, "chat_sn": None}, 40000, "both-null"),
    ({"chat_msg": 5}, 40000, "40000-before-40001"),
    ({"chat_msg": "", "chat_sn": None}, 40000, "40000-before-40001-b"),
    ({"chat_msg": 5, "chat_sn": "s"}, 40001, "msg-number"),
    ({"chat_msg": 1.5, "chat_sn": "s"}, 40001, "msg-float"),
    ({"chat_msg": True, "chat_sn": "s"}, 40001, "msg-bool"),
    ({"chat_msg": [], "chat_sn": "s"}, 40001, "msg-array"),
    ({"chat_msg": {}, "chat_sn": "s"}, 40001, "msg-object"),
    ({"chat_msg": "a", "chat_sn": 5}, 40001, "sn-number"),
    ({"chat_msg": "a", "chat_sn": ["s"]}, 40001, "sn-array"),
    ({"chat_msg": "", "chat_sn": "s"}, 40001, "msg-empty"),
    ({"chat_msg": "a", "chat_sn": ""}, 40001, "sn-empty"),
    ({"chat_msg": "x" * 1001, "chat_sn": "s"}, 40001, "msg-1001"),
    ({"chat_msg": "区" * 1001, "chat_sn": "s"}, 40001, "msg-1001-cjk"),
    ({"chat_msg": "😀" * 1001, "chat_sn": "s"}, 40001, "msg-1001-emoji"),
    ({"chat_msg": "a", "chat_sn": "s" * 65}, 40001, "sn-65"),
    ({"chat_msg": "a", "chat_sn": "区" * 65}, 40001, "sn-65-cjk"),
    # valid params, but not in a room: 40004 (§8.1: after 40000/40001)
    ({"chat_msg": "123", "chat_sn": "Dhy84razsSeh7WPSiAdW7EsZ76fyt267"}, 40004, "seed-example"),
    ({"chat_msg": "x" * 1000, "chat_sn": "s"}, 40004, "msg-1000"),
    ({"chat_msg": "😀" * 1000, "chat_sn": "s"}, 40004, "msg-1000-emoji"),
    ({"chat_msg": "区" * 1000, "chat_sn": "区" * 64}, 40004, "msg-1000-cjk-sn-64-cjk"),
    ({"chat_msg": "a", "chat_sn": "s" * 64}, 40004, "sn-64"),
]


@pytest.mark.parametrize("params,code", [(p, c) for p, c, _ in SEND_PARAM_CASES], ids=[i for _, _, i in SEND_PARAM_CASES])
def test_send_chat_msg_params_outside_room(srv, ws, params, code):
    c = ws(srv)
    expect_result(c.call("game/send_chat_msg", params, id="sc"), code, {}, id="sc")


@pytest.mark.parametrize("params,code", [(p, c) for p, c, _ in SEND_PARAM_CASES if c != 40004], ids=[i for _, c, i in SEND_PARAM_CASES if c != 40004])
def test_send_chat_msg_bad_params_in_room(srv, ws, params, code):
    zone = uniq_zone()
    a, b = ws(srv, srv.session(1, zone)), ws(srv, srv.session(1, zone))
    form_room([a, b])
    expect_result(a.call("game/send_chat_msg", params, id="bad"), code, {}, id="bad")
    b.silence(0.3)


def test_send_chat_msg_success_and_push(srv, ws):
    zone = uniq_zone()
    sa, sb = srv.session(1, zone), srv.session(1, zone)
    a, b = ws(srv, sa), ws(srv, sb)
    form_room([a, b])
    rid = "yHs6ndAXiyi6spTSKPRXX26dSeTRa4xx"
    a.send_text(
        json.dumps(
            {
                "id": rid,
                "jsonrpc": "2.0",
                "method": "game/send_chat_msg",
                "params": {"chat_msg": "123", "chat_sn": "Dhy84razsSeh7WPSiAdW7EsZ76fyt267"},
            }
        )
    )
    reply = a.recv()
    d = expect_result(reply, 20002, id=rid)
    assert d["send_player_id"] == sa.account and d["chat_msg"] == "123"
    assert d["chat_sn"] == "Dhy84razsSeh7WPSiAdW7EsZ76fyt267"
    push = b.recv()
    expect_push(push, 20002)
    assert push["result"] == reply["result"]
    a.silence()
    b.silence()


def test_send_chat_msg_boundary_lengths_delivered(srv, ws):
    zone = uniq_zone()
    a, b = ws(srv, srv.session(1, zone)), ws(srv, srv.session(1, zone))
    form_room([a, b])
    chat(a, [b], "😀" * 1000, "区" * 64)
    chat(b, [a], "x" * 1000, "s" * 64)
    chat(a, [b], "区" * 1000, "k")
    chat(b, [a], 'quote " backslash \\ newline \n tab \t nul \u0000 ！', "特殊")


def test_push_ids_fresh(srv, ws):
    zone = uniq_zone()
    a, b = ws(srv, srv.session(1, zone)), ws(srv, srv.session(1, zone))
    rid = a.req("game/match_player", [])
    expect_result(a.recv(), 20000, [], id=rid)
    rid = b.req("game/match_player", [])
    expect_result(b.recv(), 20000, [], id=rid)
    ids = [a.recv()["id"], b.recv()["id"]]
    for i in range(5):
        chat(a, [], f"m{i}", f"s{i}")
        ids.append(b.recv()["id"])
    assert all(RE_PUSH_ID.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids), ids


def test_chat_sn_dedupe(srv, ws):
    """§5 / §8.9."""
    zone = uniq_zone()
    sa, sb = srv.session(1, zone), srv.session(1, zone)
    a, b = ws(srv, sa), ws(srv, sb)
    form_room([a, b])
    first = chat(a, [b], "hello", "dup-1")
    # Same sn, same text: same 20002 again (with the new request id), not delivered.
    r = a.call("game/send_chat_msg", {"chat_msg": "hello", "chat_sn": "dup-1"}, id="again")
    expect_result(r, 20002, id="again")
    assert r["result"] == first["result"], (r, first)
    # Same sn, different text: the first message's 20002, unchanged.
    r = a.call("game/send_chat_msg", {"chat_msg": "CHANGED", "chat_sn": "dup-1"}, id="again2")
    expect_result(r, 20002, id="again2")
    assert r["result"] == first["result"], (r, first)
    b.silence()
    # Per sender: B may use the same sn.
    chat(b, [a], "from b", "dup-1", sender_id=sb.account)
    # Still deduped after other messages.
    chat(a, [b], "other", "dup-2")
    r = a.call("game/send_chat_msg", {"chat_msg": "x", "chat_sn": "dup-1"}, id="again3")
    assert r["result"] == first["result"], (r, first)
    b.silence()
    a.silence()


def test_chat_sn_is_per_room(fresh, ws):
    a, b = ws(fresh), ws(fresh)
    room1, _ = form_room([a, b])
    chat(a, [b], "hello", "same-sn")
    expect_result(a.call("game/leave_chat", []), 20000)
    expect_push(b.recv(), 20003)
    room2, _ = form_room([a, b])
    assert room2 != room1
    chat(a, [b], "hello again", "same-sn")  # a new room: delivered


def test_chat_sn_memory_at_least_10000(spawn, ws):
    """§8.9: each room remembers at least its last 10,000 chat_sns."""
    s = spawn("--rate-per-sec", "1000000", "--rate-burst", "1000000")
    a, b = ws(s), ws(s)
    form_room([a, b])
    first = chat(a, [b], "first", "sn-0")
    total = 10000
    sent = 1
    while sent < total:
        batch = range(sent, min(total, sent + 100))  # keep well under any outbound buffer
        for i in batch:
            a.req("game/send_chat_msg", {"chat_msg": "m", "chat_sn": f"sn-{i}"}, id=f"q{i}")
        for i in batch:
            expect_result(a.recv(10), 20002, id=f"q{i}")
        for i in batch:
            expect_push(b.recv(10), 20002)
        sent = batch[-1] + 1
    r = a.call("game/send_chat_msg", {"chat_msg": "late repeat", "chat_sn": "sn-0"}, id="rep")
    expect_result(r, 20002, id="rep")
    assert r["result"] == first["result"], (r, first)
    b.silence()


def _sequences_equal(seqs):
    for s in seqs[1:]:
        if s != seqs[0]:
            for i, (x, y) in enumerate(zip(seqs[0], s)):
                if x != y:
                    return f"first difference at position {i}: {x} vs {y}"
            return f"lengths differ: {len(seqs[0])} vs {len(s)}"
    return None


def _order_run(clients, per_client, window=40):
    """Every client sends `per_client` messages concurrently (at most `window` unanswered at a
    time, so that no connection ever has more than a few hundred frames in flight); returns
    each member's observed sequence of 20002s, own replies and others' pushes merged."""
    total = per_client * len(clients)
    results = [None] * len(clients)
    errors = []

    def run(idx, c):
        try:
            seq = []
            sent = 0
            own_seen = 0
            while len(seq) < total:
                if sent < per_client and sent - own_seen < window:
                    top = min(per_client, own_seen + window)
                    for i in range(sent, top):
                        c.req("game/send_chat_msg", {"chat_msg": f"c{idx}-{i}", "chat_sn": f"c{idx}-{i}"}, id=f"c{idx}-{i}")
                    sent = top
                f = c.recv(10)
                d = f.get("result", {}).get("data", {})
                sn = d.get("chat_sn", "")
                if sn.startswith(f"c{idx}-"):
                    expect_result(f, 20002, id=sn)  # own message: the reply, never a push
                    own_seen += 1
                else:
                    expect_push(f, 20002)
                seq.append((d["send_player_id"], d["chat_sn"], d["chat_msg"]))
            results[idx] = seq
        except BaseException as e:  # surfaced below
            errors.append((idx, e))

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    for c, seq in zip(clients, results):
        assert seq is not None, "a member did not finish"
        c.silence(0.3)
        assert len(set(seq)) == total, "a message was seen twice or lost"
    return results


def test_one_order_per_room_two_members(spawn, ws):
    """§5 / §8.8 over 600 messages with a raised rate limit."""
    s = spawn("--rate-per-sec", "100000", "--rate-burst", "100000")
    a, b = ws(s), ws(s)
    form_room([a, b])
    seqs = _order_run([a, b], 300)  # 600 messages
    diff = _sequences_equal(seqs)
    assert diff is None, diff


def test_one_order_per_room_three_members(spawn, ws):
    s = spawn("--rate-per-sec", "100000", "--rate-burst", "100000", "--room-size", "3")
    cs = [ws(s), ws(s), ws(s)]
    form_room(cs)
    seqs = _order_run(cs, 150)  # 450 messages
    diff = _sequences_equal(seqs)
    assert diff is None, diff


def _blob(tag, n):
    out = []
    for i in range(n):
        payload = json.dumps(
            {"jsonrpc": "2.0", "id": f"{tag}{i}", "method": "game/send_chat_msg", "params": {"chat_msg": "x", "chat_sn": f"{tag}{i}"}}
        ).encode()
        mask = os.urandom(4)
        head = bytes([0x81]) + (bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0xFE]) + struct.pack("!H", len(payload)))
        out.append(head + mask + bytes(c ^ mask[k % 4] for k, c in enumerate(payload)))
    return b"".join(out)


def test_burst_within_rate_limit_is_delivered(spawn):
    """§5 / §7: both members of a room pipeline 200 requests at once, well within the (raised)
    request rate, and read as fast as they can.  Each must get its 200 replies and the peer's 200
    pushes; PROTOCOL.md has no limit that would close such a connection."""
    s = spawn("--rate-per-sec", "100000", "--rate-burst", "100000")
    for trial in range(3):
        raws = [RawWS(s), RawWS(s)]
        try:
            for r in raws:
                r.send_frame(0x1, _msg("m", method="game/match_player", params=[]).encode())
            for r in raws:
                while b"20001" not in r.recv_frame(T)[1]:
                    pass
            outcome = [None, None]

            def go(k):
                raws[k].sock.sendall(_blob(f"t{trial}p{k}-", 200))
                got = 0
                try:
                    while got < 400:
                        op, payload = raws[k].recv_frame(5)
                        if op == 0x8:
                            outcome[k] = f"closed {struct.unpack('!H', payload[:2])[0]} {payload[2:].decode(errors='replace')!r} after {got} frames"
                            return
                        if op == 0x1:
                            got += 1
                    outcome[k] = "ok"
                except (TimeoutError, EOFError, OSError) as e:
                    outcome[k] = f"{e!r} after {got} frames"

            ts = [threading.Thread(target=go, args=(k,)) for k in (0, 1)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(15)
            assert outcome == ["ok", "ok"], f"trial {trial}: {outcome}"
        finally:
            for r in raws:
                r.close()


# ================================================================================================
# §5 game/cancel_match and game/leave_chat
# ================================================================================================


def test_cancel_match(srv, ws):
    zone = uniq_zone()
    a = ws(srv, srv.session(1, zone))
    expect_result(a.call("game/cancel_match", []), 20000)  # not queued
    expect_result(a.call("game/match_player", []), 20000, [])
    expect_result(a.call("game/cancel_match", []), 20000)  # queued
    expect_result(a.call("game/cancel_match", []), 20000)  # again
    b = ws(srv, srv.session(1, zone))
    expect_result(b.call("game/match_player", []), 20000, [])
    a.silence(0.3)
    b.silence(0.3)
    c = ws(srv, srv.session(1, zone))
    form_room_with_queued(b, c)
    a.silence()


def test_cancel_match_in_room_keeps_room(srv, ws):
    zone = uniq_zone()
    a, b = ws(srv, srv.session(1, zone)), ws(srv, srv.session(1, zone))
    form_room([a, b])
    expect_result(a.call("game/cancel_match", []), 20000)
    b.silence(0.3)
    chat(a, [b], "still here", "c1")


def test_leave_chat(fresh, ws):
    a, b = ws(fresh), ws(fresh)
    room_id, (pa, pb) = form_room([a, b])
    rid = a.req("game/leave_chat", [])
    expect_result(a.recv(), 20000, id=rid)
    d = expect_push(b.recv(), 20003)
    assert d.get("room_id") == room_id and d.get("player_id") == pa and d.get("reason") == "left", d
    a.silence()
    b.silence()
    # the room closed: both are free
    for c in (a, b):
        expect_result(c.call("game/send_chat_msg", {"chat_msg": "x", "chat_sn": "y"}), 40004, {})
        expect_result(c.call("game/leave_chat", []), 40004, {})
    room2, _ = form_room([b, a])
    assert room2 != room_id


def test_leave_chat_not_in_room_40004(srv, ws):
    c = ws(srv)
    expect_result(c.call("game/leave_chat", [], id="lv"), 40004, {}, id="lv")
    zone = uniq_zone()
    q = ws(srv, srv.session(1, zone))
    expect_result(q.call("game/match_player", []), 20000, [])
    expect_result(q.call("game/leave_chat", []), 40004, {})  # queued is not in a room


def test_rooms_of_three(spawn, ws):
    """§8.15."""
    s = spawn("--room-size", "3")
    a, b, c = ws(s), ws(s), ws(s)
    room_id, (pa, pb, pc) = form_room([a, b, c])
    expect_result(a.call("game/leave_chat", []), 20000)
    for x in (b, c):
        d = expect_push(x.recv(), 20003)
        assert d.get("room_id") == room_id and d.get("player_id") == pa and d.get("reason") == "left", d
    # the room lives on with 2 members
    chat(b, [c], "still two", "s1", sender_id=pb)
    a.silence()
    expect_result(a.call("game/send_chat_msg", {"chat_msg": "x", "chat_sn": "y"}), 40004, {})
    expect_result(b.call("game/match_player", []), 40003, {})
    # a is free
    expect_result(a.call("game/match_player", []), 20000, [])
    expect_result(a.call("game/cancel_match", []), 20000)
    # one more leaves: the room closes, its last member freed
    expect_result(b.call("game/leave_chat", []), 20000)
    d = expect_push(c.recv(), 20003)
    assert d.get("room_id") == room_id and d.get("player_id") == pb and d.get("reason") == "left", d
    expect_result(c.call("game/send_chat_msg", {"chat_msg": "x", "chat_sn": "z"}), 40004, {})
    expect_result(c.call("game/leave_chat", []), 40004, {})
    expect_result(c.call("game/match_player", []), 20000, [])
    a.silence()


def test_rooms_of_three_anonymous_disconnect(spawn, ws):
    s = spawn("--room-size", "3")
    a, b, c = ws(s), ws(s), ws(s)
    room_id, (pa, pb, pc) = form_room([a, b, c])
    a.close()
    for x in (b, c):
        d = expect_push(x.recv(), 20003)
        assert d.get("room_id") == room_id and d.get("player_id") == pa and d.get("reason") == "disconnected", d
    chat(c, [b], "two left", "s1", sender_id=pc)


# ================================================================================================
# §6 disconnects and resume
# ================================================================================================


def test_anonymous_disconnect_leaves_room(fresh, ws):
    a, b = ws(fresh), ws(fresh)
    room_id, (pa, pb) = form_room([a, b])
    a.close()
    d = expect_push(b.recv(), 20003)
    assert d.get("room_id") == room_id and d.get("player_id") == pa and d.get("reason") == "disconnected", d
    expect_result(b.call("game/send_chat_msg", {"chat_msg": "x", "chat_sn": "y"}), 40004, {})
    expect_result(b.call("game/match_player", []), 20000, [])


def test_anonymous_abrupt_disconnect_leaves_room(fresh, ws):
    a, b = ws(fresh), ws(fresh)
    room_id, (pa, pb) = form_room([a, b])
    a.ws.socket.shutdown(socket.SHUT_RDWR)
    a.ws.socket.close()
    d = expect_push(b.recv(5), 20003)
    assert d.get("room_id") == room_id and d.get("player_id") == pa and d.get("reason") == "disconnected", d


def test_anonymous_disconnect_leaves_queue(fresh, ws):
    a = ws(fresh)
    expect_result(a.call("game/match_player", []), 20000, [])
    a.close()
    time.sleep(0.2)
    b = ws(fresh)
    expect_result(b.call("game/match_player", []), 20000, [])
    b.silence()
    c = ws(fresh)
    form_room_with_queued(b, c)


def test_queued_session_disconnect_leaves_queue(srv, ws):
    """§8.11."""
    zone = uniq_zone()
    sa = srv.session(1, zone)
    a = ws(srv, sa)
    expect_result(a.call("game/match_player", []), 20000, [])
    a.close()
    time.sleep(0.2)
    b = ws(srv, srv.session(1, zone))
    expect_result(b.call("game/match_player", []), 20000, [])
    b.silence()
    a2 = ws(srv, sa)  # reconnecting does not put a back in the queue
    a2.silence(0.3)
    b.silence(0.1)
    c = ws(srv, srv.session(1, zone))
    form_room_with_queued(b, c)
    a2.silence(0.2)


def test_resume_within_grace(srv, ws):
    """§6: 20001 again for the same room, then every missed 20002 in order, none twice."""
    zone = uniq_zone()
    sa, sb = srv.session(1, zone), srv.session(1, zone)
    a, b = ws(srv, sa), ws(srv, sb)
    room_id, _ = form_room([a, b])
    chat(a, [b], "before-a", "p1")
    chat(b, [a], "before-b", "p2")
    a.close()
    time.sleep(0.1)
    b.silence(0.3)  # within grace: no 20003
    missed = [chat(b, [], f"missed-{i}", f"m{i}") for i in range(5)]
    a2 = ws(srv, sa)
    d = expect_push(a2.recv(), 20001)
    assert d["room_id"] == room_id and d["player_id"] == sa.account and d["peer_ids"] == [sb.account], d
    for m in missed:
        p = a2.recv()
        expect_push(p, 20002)
        assert p["result"] == m["result"], (p, m)
    a2.silence()
    b.silence()
    # live again, both ways
    chat(b, [a2], "live", "l1")
    chat(a2, [b], "back", "l2", sender_id=sa.account)
    # a second absence replays only what was missed that time
    a2.close()
    time.sleep(0.1)
    m2 = chat(b, [], "missed-again", "m9")
    a3 = ws(srv, sa)
    d = expect_push(a3.recv(), 20001)
    assert d["room_id"] == room_id
    p = a3.recv()
    expect_push(p, 20002)
    assert p["result"] == m2["result"], p
    a3.silence()


def test_resume_sn_dedupe_survives(srv, ws):
    zone = uniq_zone()
    sa, sb = srv.session(1, zone), srv.session(1, zone)
    a, b = ws(srv, sa), ws(srv, sb)
    form_room([a, b])
    first = chat(a, [b], "one", "keep")
    a.close()
    time.sleep(0.1)
    a2 = ws(srv, sa)
    expect_push(a2.recv(), 20001)
    a2.silence(0.3)
    r = a2.call("game/send_chat_msg", {"chat_msg": "two", "chat_sn": "keep"}, id="k")
    expect_result(r, 20002, id="k")
    assert r["result"] == first["result"]
    b.silence()


def test_grace_expiry(spawn, ws):
    s = spawn("--resume-grace-ms", "1000")
    zone = uniq_zone()
    sa, sb = s.session(1, zone), s.session(1, zone)
    a, b = ws(s, sa), ws(s, sb)
    room_id, _ = form_room([a, b])
    a.close()
    t0 = time.monotonic()
    b.silence(0.5)  # the room waits out the grace period
    f = b.recv(4)
    elapsed = time.monotonic() - t0
    d = expect_push(f, 20003)
    assert d.get("room_id") == room_id and d.get("player_id") == sa.account and d.get("reason") == "disconnected", d
    assert elapsed >= 0.8, elapsed
    # the room is closed; b is free
    expect_result(b.call("game/send_chat_msg", {"chat_msg": "x", "chat_sn": "y"}), 40004, {})
    expect_result(b.call("game/cancel_match", []), 20000)
    # a, back after the grace period, is in no room
    a2 = ws(s, sa)
    expect_result(a2.call("game/send_chat_msg", {"chat_msg": "x", "chat_sn": "y"}, id="late"), 40004, {}, id="late")
    expect_result(a2.call("game/match_player", []), 20000, [])


def test_resume_after_room_closed_by_leave(srv, ws):
    """§8.13: 20001, the missed 20002s, then the 20003 that closed the room; then free."""
    zone = uniq_zone()
    sa, sb = srv.session(1, zone), srv.session(1, zone)
    a, b = ws(srv, sa), ws(srv, sb)
    room_id, _ = form_room([a, b])
    a.close()
    time.sleep(0.1)
    m1 = chat(b, [], "bye soon", "z1")
    m2 = chat(b, [], "bye", "z2")
    expect_result(b.call("game/leave_chat", []), 20000)
    a2 = ws(srv, sa)
    d = expect_push(a2.recv(), 20001)
    assert d["room_id"] == room_id, d
    for m in (m1, m2):
        p = a2.recv()
        expect_push(p, 20002)
        assert p["result"] == m["result"], p
    d = expect_push(a2.recv(), 20003)
    assert d.get("room_id") == room_id and d.get("player_id") == sb.account and d.get("reason") == "left", d
    a2.silence()
    expect_result(a2.call("game/send_chat_msg", {"chat_msg": "x", "chat_sn": "y"}), 40004, {})
    expect_result(a2.call("game/match_player", []), 20000, [])


def test_resume_after_room_closed_by_anonymous_disconnect(fresh, ws):
    """§8.13 with the other member anonymous (pool (0,"default"), §8.10)."""
    sa = fresh.session(0, "default")
    a = ws(fresh, sa)
    b = ws(fresh)
    room_id, (pa, pb) = form_room([a, b])
    a.close()
    time.sleep(0.1)
    m1 = chat(b, [], "gone soon", "y1")
    b.close()
    time.sleep(0.2)
    a2 = ws(fresh, sa)
    d = expect_push(a2.recv(), 20001)
    assert d["room_id"] == room_id
    p = a2.recv()
    expect_push(p, 20002)
    assert p["result"] == m1["result"]
    d = expect_push(a2.recv(), 20003)
    assert d.get("room_id") == room_id and d.get("player_id") == pb and d.get("reason") == "disconnected", d
    a2.silence()
    expect_result(a2.call("game/match_player", []), 20000, [])


def test_resume_nothing_missed_then_no_extra(srv, ws):
    zone = uniq_zone()
    sa, sb = srv.session(1, zone), srv.session(1, zone)
    a, b = ws(srv, sa), ws(srv, sb)
    room_id, _ = form_room([a, b])
    a.close()
    time.sleep(0.1)
    a2 = ws(srv, sa)
    d = expect_push(a2.recv(), 20001)
    assert d["room_id"] == room_id
    a2.silence()
    expect_result(a2.call("game/match_player", []), 40003, {})


# ================================================================================================
# §8.14 session expiry
# ================================================================================================


def test_session_expires_after_last_use(spawn, ws):
    s = spawn("--session-ttl-secs", "2")
    sess = s.session()
    time.sleep(1.2)
    c = Client(s, sess)  # used at ~1.2 s
    c.close()
    time.sleep(1.4)  # ~2.6 s after creation, ~1.4 s after last use
    c = Client(s, sess)
    assert c.alive()
    c.close()
    time.sleep(3.0)
    with pytest.raises(InvalidStatus) as ei:
        Client(s, sess)
    assert ei.value.response.status_code == 401
    # a new session works
    c = ws(s, s.session())
    assert c.alive()


def test_session_expires_unused(spawn):
    s = spawn("--session-ttl-secs", "1")
    sess = s.session()
    time.sleep(2.5)
    with pytest.raises(InvalidStatus) as ei:
        Client(s, sess)
    assert ei.value.response.status_code == 401


# ================================================================================================
# §7 rate limit and §8.1 / §8.2
# ================================================================================================


def test_rate_limit_default_burst_40(srv, ws):
    c = ws(srv)
    ids = [c.req("game/cancel_match", [], id=f"b{i}") for i in range(50)]
    replies = {}
    for _ in ids:
        f = c.recv()
        replies[f["id"]] = f
    for i in range(40):
        expect_result(replies[f"b{i}"], 20000, id=f"b{i}")
    limited = 0
    for i in range(40, 50):
        f = replies[f"b{i}"]
        if f["result"]["code"] == 40009:
            expect_result(f, 40009, {}, id=f"b{i}")
            limited += 1
    assert limited >= 8, f"only {limited} of 10 requests beyond the burst of 40 were limited"


def test_rate_limit_then_recovery(spawn, ws):
    s = spawn("--rate-per-sec", "1", "--rate-burst", "5")
    c = ws(s)
    for i in range(10):
        c.req("game/cancel_match", [], id=f"q{i}")
    got = {}
    for _ in range(10):
        f = c.recv()
        got[f["id"]] = f
    for i in range(5):
        expect_result(got[f"q{i}"], 20000, id=f"q{i}")
    for i in range(5, 10):
        expect_result(got[f"q{i}"], 40009, {}, id=f"q{i}")
    c.silence(0.2)
    time.sleep(1.3)
    expect_result(c.call("game/cancel_match", [], id="after"), 20000, id="after")
    expect_result(c.call("game/cancel_match", [], id="after2"), 40009, {}, id="after2")


def test_rate_limit_counts_every_frame_and_comes_first(spawn, ws):
    """§8.1: rate limit counted over every frame, checked before -1000; the frame is then dropped."""
    s = spawn("--rate-per-sec", "1", "--rate-burst", "5")
    c = ws(s)
    for _ in range(5):
        c.send_text("garbage")
    for _ in range(5):
        expect_error(c.recv(), -1000, None)
    c.req("game/cancel_match", [], id="v")
    expect_result(c.recv(), 40009, {}, id="v")
    c.send_text(_msg("w", method="game/nope", params=[]))
    expect_result(c.recv(), 40009, {}, id="w")
    c.send_text("garbage")
    expect_result(c.recv(), 40009, {}, id=None)
    c.silence(0.2)


def test_rate_limited_frames_are_dropped(spawn, ws):
    s = spawn("--rate-per-sec", "1", "--rate-burst", "5")
    zone = uniq_zone()
    a, b = ws(s, s.session(1, zone)), ws(s, s.session(1, zone))
    form_room([a, b])  # one token each
    for i in range(8):
        a.req("game/send_chat_msg", {"chat_msg": f"m{i}", "chat_sn": f"s{i}"}, id=f"c{i}")
    got = {}
    for _ in range(8):
        f = a.recv()
        got[f["id"]] = f
    ok = [i for i in range(8) if got[f"c{i}"]["result"]["code"] == 20002]
    assert ok == [0, 1, 2, 3], got
    for i in range(4, 8):
        expect_result(got[f"c{i}"], 40009, {}, id=f"c{i}")
    for i in ok:
        p = b.recv()
        expect_push(p, 20002)
        assert p["result"] == got[f"c{i}"]["result"]
    b.silence()
    # a rate-limited match_player does not queue
    zone2 = uniq_zone()
    c, d = ws(s, s.session(1, zone2)), ws(s, s.session(1, zone2))
    for i in range(5):
        expect_result(c.call("game/cancel_match", []), 20000)
    expect_result(c.call("game/match_player", [], id="mp"), 40009, {}, id="mp")
    expect_result(d.call("game/match_player", []), 20000, [])
    c.silence(0.3)
    d.silence(0.3)


# ================================================================================================
# additional §3 / §6 / §8.15 combinations
# ================================================================================================


def test_zone_strings_compared_exactly(srv, ws):
    base = uniq_zone()
    a = ws(srv, srv.session(1, base))
    b = ws(srv, srv.session(1, base.upper()))
    c = ws(srv, srv.session(1, base + " "))
    for x in (a, b, c):
        expect_result(x.call("game/match_player", []), 20000, [])
    for x in (a, b, c):
        x.silence(0.3)


def test_peer_stays_in_room_during_grace(srv, ws):
    zone = uniq_zone()
    sa, sb = srv.session(1, zone), srv.session(1, zone)
    a, b = ws(srv, sa), ws(srv, sb)
    form_room([a, b])
    a.close()
    time.sleep(0.1)
    expect_result(b.call("game/match_player", []), 40003, {})
    b.silence(0.3)


def test_resume_in_room_of_three_keeps_room_order(spawn, ws):
    s = spawn("--room-size", "3", "--rate-per-sec", "100000", "--rate-burst", "100000")
    zone = uniq_zone()
    sa, sb, sc = s.session(1, zone), s.session(1, zone), s.session(1, zone)
    a, b, c = ws(s, sa), ws(s, sb), ws(s, sc)
    room_id, _ = form_room([a, b, c])
    a.close()
    time.sleep(0.1)

    def burst(x, tag):
        for i in range(30):
            x.req("game/send_chat_msg", {"chat_msg": f"{tag}{i}", "chat_sn": f"{tag}{i}"}, id=f"{tag}{i}")

    tb = threading.Thread(target=burst, args=(b, "b"))
    tc = threading.Thread(target=burst, args=(c, "c"))
    tb.start(), tc.start()
    tb.join(5), tc.join(5)
    order_b = [b.recv()["result"]["data"]["chat_sn"] for _ in range(60)]
    order_c = [c.recv()["result"]["data"]["chat_sn"] for _ in range(60)]
    assert order_b == order_c, _sequences_equal([order_b, order_c])
    a2 = ws(s, sa)
    d = expect_push(a2.recv(), 20001)
    assert d["room_id"] == room_id and sorted(d["peer_ids"]) == sorted([sb.account, sc.account]), d
    order_a = []
    for _ in range(60):
        f = a2.recv()
        expect_push(f, 20002)
        order_a.append(f["result"]["data"]["chat_sn"])
    assert order_a == order_b, _sequences_equal([order_b, order_a])
    a2.silence()


def test_grace_expiry_in_room_of_three(spawn, ws):
    s = spawn("--room-size", "3", "--resume-grace-ms", "800")
    zone = uniq_zone()
    sa, sb, sc = s.session(1, zone), s.session(1, zone), s.session(1, zone)
    a, b, c = ws(s, sa), ws(s, sb), ws(s, sc)
    room_id, _ = form_room([a, b, c])
    a.close()
    for x in (b, c):
        d = expect_push(x.recv(4), 20003)
        assert d.get("room_id") == room_id and d.get("player_id") == sa.account and d.get("reason") == "disconnected", d
    chat(b, [c], "still two", "q1", sender_id=sb.account)


def test_reconnect_after_grace_expiry_gets_no_room(spawn, ws):
    s = spawn("--resume-grace-ms", "600")
    zone = uniq_zone()
    sa, sb = s.session(1, zone), s.session(1, zone)
    a, b = ws(s, sa), ws(s, sb)
    form_room([a, b])
    a.close()
    expect_push(b.recv(4), 20003)
    a2 = ws(s, sa)
    # The room is gone; a2 is not resumed into it (no 20001 for the old room).
    frames = []
    try:
        while True:
            frames.append(a2.recv(0.5))
    except AssertionError:
        pass
    assert not any(f.get("result", {}).get("code") == 20001 for f in frames), frames
    expect_result(a2.call("game/match_player", []), 20000, [])


def test_resume_with_many_missed_messages_default_config(fresh, ws):
    """§6 with every limit at its default: while A is away (well within the 30 s grace), B sends
    300 messages at the allowed rate (~13 s).  A resumes: 20001, then all 300 missed 20002s in
    order, none twice."""
    zone = uniq_zone()
    sa, sb = fresh.session(1, zone), fresh.session(1, zone)
    a, b = ws(fresh, sa), ws(fresh, sb)
    room_id, _ = form_room([a, b])
    a.close()
    time.sleep(0.1)
    missed = []
    deadline = time.monotonic() + 25
    while len(missed) < 300:
        assert time.monotonic() < deadline, "could not send 300 messages at the default rate in 25 s"
        r = b.call("game/send_chat_msg", {"chat_msg": f"m{len(missed)}", "chat_sn": f"s{len(missed)}"})
        if r["result"]["code"] == 40009:
            time.sleep(0.05)
            continue
        expect_result(r, 20002)
        missed.append(r["result"])
    a2 = ws(fresh, sa)
    got = []
    try:
        d = expect_push(a2.recv(), 20001)
        assert d["room_id"] == room_id
        for _ in missed:
            f = a2.recv()
            expect_push(f, 20002)
            got.append(f["result"])
    except ConnectionClosed as e:
        # Try once more: are the missed messages still there for a second resume?
        again = ws(fresh, sa)
        frames = []
        try:
            while True:
                frames.append(again.recv(1.0))
        except (AssertionError, ConnectionClosed):
            pass
        codes = collections.Counter(f.get("result", {}).get("code") for f in frames)
        pytest.fail(
            f"resumed connection closed ({e.rcvd}) after {len(got)} of {len(missed)} missed messages; "
            f"a second resume then received {dict(codes)}"
        )
    assert got == missed
    a2.silence()
