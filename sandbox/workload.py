"""The tiny programs a sandbox server runs: its services and the cpu_hog fault.

    python -m sandbox.workload game-engine --server app-primary --port 18030
    python -m sandbox.workload session-worker --server app-primary --data DIR
    python -m sandbox.workload cpu-hog --server app-primary --seconds 120

Each logs timestamped lines on stdout, which the supervisor appends to the service journal,
and exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

HOST = "127.0.0.1"


def _log(server: str, program: str, message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(f"{stamp} {server} {program}[{os.getpid()}]: {message}", flush=True)


def _exit_on_sigterm(server: str, program: str) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        _log(server, program, "SIGTERM: stopping")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)


def run_game_engine(server: str, port: int) -> None:
    """Serve ``GET /health`` (HTTP/1.0, JSON) on 127.0.0.1:``port`` until SIGTERM."""
    started = time.time()

    class Handler(BaseHTTPRequestHandler):
        server_version = "game-engine/1.0"

        def do_GET(self) -> None:
            if self.path == "/health":
                status, body = (
                    200,
                    {
                        "status": "ok",
                        "service": "game-engine",
                        "server": server,
                        "pid": os.getpid(),
                        "uptime_s": round(time.time() - started, 3),
                    },
                )
            else:
                status, body = 404, {"error": f"no such path: {self.path}"}
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            _log(server, "game-engine", format % args)

    class Server(ThreadingHTTPServer):
        # a hung engine (SIGSTOP) keeps accepting into the kernel backlog: make it deep, so
        # probes see "connects, never answers" rather than a connect timeout
        request_queue_size = 128
        daemon_threads = True

    _exit_on_sigterm(server, "game-engine")
    with Server((HOST, port), Handler) as httpd:
        _log(server, "game-engine", f"listening on {HOST}:{port}")
        httpd.serve_forever(poll_interval=0.2)


def run_session_worker(server: str, data: Path) -> None:
    """Keep a small session state file in the data mount fresh, logging now and then."""
    _exit_on_sigterm(server, "session-worker")
    data.mkdir(parents=True, exist_ok=True)
    state = data / "sessions.json"
    _log(server, "session-worker", f"started, state in {state}")
    tick = 0
    while True:
        sessions = 40 + (tick * 7) % 23  # a plausible, deterministic load
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"active_sessions": sessions, "updated": time.time()}))
        tmp.replace(state)
        if tick % 6 == 0:
            _log(server, "session-worker", f"{sessions} active sessions")
        tick += 1
        time.sleep(5)


def run_cpu_hog(server: str, seconds: float) -> None:
    """Spin one CPU for ``seconds``, then exit by itself."""
    _log(server, "cpu-hog", f"spinning for {seconds:g}s")
    deadline = time.monotonic() + seconds
    spins = 0
    while time.monotonic() < deadline:
        for _ in range(10_000):
            spins += 1
    _log(server, "cpu-hog", f"done after {seconds:g}s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one workload program; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.workload")
    sub = parser.add_subparsers(dest="program", required=True)
    engine = sub.add_parser("game-engine")
    engine.add_argument("--port", type=int, required=True)
    worker = sub.add_parser("session-worker")
    worker.add_argument("--data", type=Path, required=True)
    hog = sub.add_parser("cpu-hog")
    hog.add_argument("--seconds", type=float, default=120.0)
    for program in (engine, worker, hog):
        program.add_argument("--server", required=True)
    args = parser.parse_args(argv)
    if args.program == "game-engine":
        run_game_engine(args.server, args.port)
    elif args.program == "session-worker":
        run_session_worker(args.server, args.data)
    else:
        run_cpu_hog(args.server, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
