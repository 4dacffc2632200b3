"""HTTP sweep throughput: one Floorwatch sweep of 10,000 targets against bare client loops.

Serves the targets from nginx on loopback (a range of 127.0.0.1 ports, a distinct path per
target, access log off, every connection closed after its answer), then times, over the
same targets and with a fresh connection per probe:

  (a) ``tasks.sweep.sweep_checks`` on Target/HttpProbe objects built in memory (the sweep
      workers are started first and timed apart, as a long-lived process starts them once),
  (b) a bare asyncio + aiohttp loop (same concurrency, ``force_close`` connector),
  (c) a bare asyncio + httpx loop (same concurrency, no keep-alive).

    .venv/bin/python bench/sweep.py [--targets 10000] [--concurrency 500] [--ports 100]

Prints one line per measurement, then a last line of JSON:
{"targets": 10000, "sweep_s": ..., "aiohttp_s": ..., "httpx_s": ..., "probes_per_s": ...,
 "ratio": sweep_s / aiohttp_s, "peak_rss_mb": ..., ...}
``peak_rss_mb`` adds this process's peak RSS, each sweep worker's (VmHWM) and that of
reaped children (RUSAGE_CHILDREN, nginx).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import resource
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import httpx

from floorwatch.inventory import Target
from sandbox.topology import HOST, free_base_port
from tasks.sweep import shutdown_workers, start_workers, sweep_checks, worker_pids

NGINX = "/usr/sbin/nginx"
BODY = '{"status": "ok", "service": "bench"}'
# nginx never outlives the bench: a hard cap on its life, and a signal when we die.
NGINX_MAX_LIFE_S = 600
NGINX_START_S = 10.0
PHASE_LIMIT_S = 120.0
PR_SET_PDEATHSIG = 1


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE to its hard limit (each probe in flight holds a socket)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def nginx_config(prefix: Path, base: int, ports: int, workers: int) -> str:
    listens = "\n".join(
        f"        listen {HOST}:{port} reuseport backlog=4096;"
        for port in range(base, base + ports)
    )
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    keepalive_timeout 0;  # one answer per connection, as for a fresh probe of each host
{temp}
    server {{
{listens}
        location / {{
            default_type application/json;
            return 200 '{BODY}';
        }}
    }}
}}
"""


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


def descendants(root: int) -> list[int]:
    """Process ids of every descendant of ``root`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


@contextlib.contextmanager
def nginx(ports: int, workers: int) -> Iterator[tuple[int, int]]:
    """nginx listening on ``ports`` consecutive loopback ports; yields the first port and
    the id of the process that runs it."""
    base = free_base_port(span=ports, start=30000)
    with tempfile.TemporaryDirectory(prefix="floorwatch-bench-nginx-") as tmp:
        prefix = Path(tmp)
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(prefix, base, ports, workers))
        cmd = ["timeout", "-k", "5", str(NGINX_MAX_LIFE_S), NGINX, "-p", str(prefix),
               "-c", str(conf), "-e", str(prefix / "error.log"), "-g", "daemon off;"]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        try:
            deadline = time.monotonic() + NGINX_START_S
            while not (_accepts(base) and _accepts(base + ports - 1)):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (prefix / "error.log").read_text(errors="replace")[-2000:]
                    raise SystemExit(f"nginx did not start (exit {proc.poll()}):\n{log}")
                time.sleep(0.05)
            yield base, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def make_targets(count: int, base: int, ports: int, timeout: float) -> list[Target]:
    """``count`` HTTP targets spread over the ports, each with its own path."""
    return [
        Target.model_validate(
            {
                "name": f"bench-{i:05d}",
                "kind": "http_service",
                "connection": {"url": f"http://{HOST}:{base + i % ports}/t/{i}"},
                "probes": [
                    {
                        "kind": "http",
                        "timeout": timeout,
                        "expect": {"status": 200, "json_path": "$.status", "json_equals": "ok"},
                    }
                ],
            }
        )
        for i in range(count)
    ]


async def bounded(
    semaphore: asyncio.Semaphore, fetch: Callable[[str], Awaitable[bool]], url: str
) -> bool:
    async with semaphore:
        return await fetch(url)


async def aiohttp_loop(urls: list[str], concurrency: int, timeout: float) -> int:
    """A bare aiohttp loop; the number of 200 answers."""
    semaphore = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    limit = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=limit) as session:

        async def fetch(url: str) -> bool:
            try:
                async with session.get(url) as response:
                    await response.read()
                    return response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        answers = await asyncio.gather(*(bounded(semaphore, fetch, url) for url in urls))
    return sum(answers)


async def httpx_loop(urls: list[str], concurrency: int, timeout: float) -> int:
    """A bare httpx loop without keep-alive; the number of 200 answers."""
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def fetch(url: str) -> bool:
            try:
                response = await client.get(url)
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        answers = await asyncio.gather(*(bounded(semaphore, fetch, url) for url in urls))
    return sum(answers)


def cpu_seconds(pids: list[int]) -> float:
    """CPU time used so far by this process and by the processes ``pids``."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def timed(
    label: str, work: Callable[[], Awaitable[int]], expected: int, server: list[int]
) -> tuple[float, float]:
    """Run ``work`` to completion (bounded); print and return its seconds and CPU seconds
    (this process and the sweep workers: on a shared machine, the steadier figure), with
    the CPU the ``server`` processes (nginx) spent meanwhile."""
    pids = worker_pids()
    cpu, served = cpu_seconds(pids), cpu_seconds(server) - time.process_time()
    began = time.perf_counter()
    good = asyncio.run(asyncio.wait_for(work(), PHASE_LIMIT_S))
    seconds = time.perf_counter() - began
    cpu = cpu_seconds(pids) - cpu
    served = cpu_seconds(server) - time.process_time() - served
    print(f"{label:<26} {seconds:6.3f} s {expected / seconds:6.0f} probes/s  "
          f"cpu {cpu:5.2f} s (nginx {served:4.2f} s)  {good}/{expected} ok")
    if good != expected:
        print(f"  warning: {expected - good} probes failed")
    return seconds, cpu


def peak_rss_mb(workers: list[int]) -> dict[str, float]:
    """Peak RSS of this process, of each sweep worker and of reaped children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    peaks = []
    for pid in workers:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
    return {"self": own, "workers": sum(peaks), "children": children,
            "total": own + sum(peaks) + children}


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--ports", type=int, default=100, help="nginx listening ports")
    parser.add_argument("--nginx-workers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="sweep processes (CPUs)")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-probe timeout, s")
    args = parser.parse_args()
    fd_limit = raise_fd_limit()
    print(f"targets {args.targets}, concurrency {args.concurrency}, nginx {args.ports} ports "
          f"x {args.nginx_workers} workers, {os.cpu_count()} CPUs, RLIMIT_NOFILE {fd_limit}")
    n = args.targets
    # Other work on the machine slows every figure; the load average says how much.
    load_before = round(os.getloadavg()[0], 2)
    try:
        with nginx(args.ports, args.nginx_workers) as (base, nginx_pid):
            server = descendants(nginx_pid)
            targets = make_targets(n, base, args.ports, args.timeout)
            checks = [(target, target.probes[0]) for target in targets]
            urls = [str(target.connection.url) for target in targets]

            began = time.perf_counter()
            start_s = start_workers(args.workers)
            print(f"{'sweep workers start':<28} {start_s:7.3f} s  "
                  f"({len(worker_pids())} processes)")

            async def sweep() -> int:
                results = await sweep_checks(
                    checks, "bench", concurrency=args.concurrency, workers=args.workers
                )
                assert [r.target for r in results] == [t.name for t in targets]
                return sum(result.ok for result in results)

            sweep_s, sweep_cpu = timed("floorwatch sweep", sweep, n, server)
            again_s, _ = timed("floorwatch sweep, again", sweep, n, server)
            pids = worker_pids()
            aiohttp_s, aiohttp_cpu = timed(
                "bare aiohttp",
                lambda: aiohttp_loop(urls, args.concurrency, args.timeout), n, server,
            )
            httpx_s, httpx_cpu = timed(
                "bare httpx",
                lambda: httpx_loop(urls, args.concurrency, args.timeout), n, server,
            )
            rss = peak_rss_mb(pids)
            total_s = time.perf_counter() - began
    finally:
        shutdown_workers()
    print(f"peak RSS: {rss['total']:.0f} MB (self {rss['self']:.0f}, workers "
          f"{rss['workers']:.0f}, children {rss['children']:.0f}); run {total_s:.1f} s")
    print(json.dumps({
        "targets": n,
        "sweep_s": round(sweep_s, 3),
        "aiohttp_s": round(aiohttp_s, 3),
        "httpx_s": round(httpx_s, 3),
        "probes_per_s": round(n / sweep_s),
        "ratio": round(sweep_s / aiohttp_s, 3),
        "peak_rss_mb": round(rss["total"], 1),
        "sweep_again_s": round(again_s, 3),
        "workers_start_s": round(start_s, 3),
        "workers": len(pids),
        "concurrency": args.concurrency,
        "cpu_us_per_probe": {"sweep": round(sweep_cpu / n * 1e6),
                             "aiohttp": round(aiohttp_cpu / n * 1e6),
                             "httpx": round(httpx_cpu / n * 1e6)},
        "load_avg": [round(os.getloadavg()[0], 2), load_before],
    }))


if __name__ == "__main__":
    main()
