"""A rate-limited world: does the fetcher learn each host's limit?

Three loopback servers, each in its own process, as a new user meets them:

* ``api`` — at most 4 requests at once and 20 a second; over either limit it
  answers 429 with ``Retry-After: 1`` (``tests/support/limited.py``);
* ``art`` — at most 2 at once and 5 a second; 429 with an HTTP-date Retry-After;
* ``cdn`` — no limit (``tests/support/server.py``).

Every request also takes ``--latency`` (50 ms) on the limited hosts, 20 ms on
the CDN. One ``Fetcher`` with the default limits (32 in flight, 8 per host)
fetches every URL at once (the per-host admission queues them), as a run with
many item workers would. Variants, each against fresh servers:

* ``fixed`` — today's behaviour: the window stays at ``--per-host`` (the
  Retry-After pause and the throttle deadline still apply);
* ``adaptive`` — the AIMD window and the learned rate (the default);
* ``adaptive+rate`` — plus ``--rate`` at the hosts' published limits.

Per host: requests sent, refused (429) and the refused fraction, what the
server saw in flight at most, slots lost, and wall time against the ideal
schedule (requests / allowed rate: what a client that knew the limits would
need).

    python bench/bench_throttle.py                  # 600 api, 150 art, 2000 cdn
    python bench/bench_throttle.py --api 200 --art 50 --cdn 500 --only adaptive
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT))

from artpipe.errors import FetchError  # noqa: E402
from artpipe.fetch import Fetcher, FetchLimits  # noqa: E402

VARIANTS = ("fixed", "adaptive", "adaptive+rate")


@dataclass(frozen=True)
class Host:
    name: str
    requests: int
    max_concurrent: int | None = None
    max_rps: float | None = None
    date: bool = False


@dataclass
class Row:
    variant: str
    host: str
    requests: int
    sent: int
    refused: int
    max_in_flight: int
    lost: int
    seconds: float
    ideal: float


def start(host: Host, latency: float) -> tuple[subprocess.Popen[str], int]:
    if host.max_concurrent is None and host.max_rps is None:
        cmd = [sys.executable, str(ROOT / "tests/support/server.py"), "--latency",
               str(latency), "--port", "0"]
    else:
        cmd = [sys.executable, str(ROOT / "tests/support/limited.py"), "--latency",
               str(latency), "--port", "0", "--retry-after", "1"]
        if host.max_concurrent is not None:
            cmd += ["--max-concurrent", str(host.max_concurrent)]
        if host.max_rps is not None:
            cmd += ["--max-rps", f"{host.max_rps:g}"]
        if host.date:
            cmd.append("--date")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'python'}"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, int(line.split()[1])


async def fetch_world(urls: dict[str, list[str]], limits: FetchLimits
                      ) -> tuple[dict[str, int], dict[str, float]]:
    """Fetch every URL at once; per host: slots lost, seconds to its last byte."""
    lost = dict.fromkeys(urls, 0)
    done = dict.fromkeys(urls, 0.0)
    started = time.monotonic()
    async with Fetcher(limits) as fetcher:

        async def one(name: str, url: str) -> None:
            try:
                await fetcher.fetch(url)
            except FetchError as exc:
                lost[name] += 1
                print(f"  lost: {exc}", file=sys.stderr)
            done[name] = max(done[name], time.monotonic() - started)

        await asyncio.gather(*(one(name, u) for name, us in urls.items() for u in us))
        learned = {name: (s.rate, s.window_min) for name, s in fetcher.host_stats().items()}
    print(f"  rate now, smallest window: {learned}", file=sys.stderr)
    return lost, done


def run_variant(variant: str, world: list[Host], latency: float) -> list[Row]:
    procs = {h.name: start(h, latency if h.max_rps else 0.02) for h in world}
    try:
        urls = {h.name: [f"http://127.0.0.1:{procs[h.name][1]}/{variant}/{i}.jpg"
                         for i in range(h.requests)] for h in world}
        rates = tuple((f"127.0.0.1:{procs[h.name][1]}", h.max_rps) for h in world
                      if h.max_rps is not None) if variant == "adaptive+rate" else ()
        limits = FetchLimits(adaptive=variant != "fixed", rates=rates)
        lost, done = asyncio.run(fetch_world(urls, limits))
        rows = []
        for h in world:
            port = procs[h.name][1]
            if h.max_rps is not None:
                with urlopen(f"http://127.0.0.1:{port}/_stats", timeout=10) as resp:
                    seen = json.loads(resp.read())
            else:
                seen = {"accepted": h.requests, "refused": 0, "max_in_flight": 0}
            ideal = h.requests / h.max_rps if h.max_rps else 0.0
            rows.append(Row(variant, h.name, h.requests, seen["accepted"] + seen["refused"],
                            seen["refused"], seen["max_in_flight"], lost[h.name],
                            done[h.name], ideal))
        return rows
    finally:
        for proc, _port in procs.values():
            proc.kill()
            proc.wait()


def table(rows: list[Row]) -> str:
    out = ["| variant | host | requests | sent | 429 | 429 % | max in flight | lost | "
           "wall s | ideal s | wall / ideal |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r.seconds / r.ideal:.2f}×" if r.ideal else "—"
        ideal = f"{r.ideal:.1f}" if r.ideal else "—"
        out.append(f"| {r.variant} | {r.host} | {r.requests} | {r.sent} | {r.refused} | "
                   f"{100 * r.refused / max(1, r.sent):.1f} | {r.max_in_flight or '—'} | "
                   f"{r.lost} | {r.seconds:.1f} | {ideal} | {ratio} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", type=int, default=600, help="requests to the 4/20 host")
    parser.add_argument("--art", type=int, default=150, help="requests to the 2/5 host")
    parser.add_argument("--cdn", type=int, default=2000, help="requests to the CDN")
    parser.add_argument("--latency", type=float, default=0.05,
                        help="seconds per request on the limited hosts")
    parser.add_argument("--only", choices=VARIANTS, action="append")
    args = parser.parse_args()
    world = [Host("api (4 at once, 20/s, Retry-After: 1)", args.api, 4, 20),
             Host("art (2 at once, 5/s, HTTP-date)", args.art, 2, 5, date=True),
             Host("cdn", args.cdn)]
    rows: list[Row] = []
    for variant in args.only or VARIANTS:
        rows += run_variant(variant, world, args.latency)
        print(table([r for r in rows if r.variant == variant]), file=sys.stderr)
    print(f"\n{platform.node()}: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"Python {platform.python_version()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
