#!/usr/bin/env python3
"""Accept rate: messages/second taken into the queue over SMTP, postpy beside Postfix.

Both systems run at once, each on a private temporary tree on 127.0.0.1,
configured to *accept* mail but not deliver it: their master.cf has no
qmgr, so every message ends in ``incoming/`` (written and fsynced with its
directory before the 250, as always).  The same load generator drives
each in turn: Postfix's C ``smtp-source`` (cheap on CPU, no per-message
timing) and/or the stdlib asyncio client in benchlib (times every
transaction, MAIL to the 250 after the final dot, for p50/p99).  Runs
alternate between the systems; each run starts with an empty queue and
ends when the generator is done and ``incoming/`` holds every message.

Reported per generator and concurrency: median messages/second, p50/p99
transaction latency (python generator), CPU milliseconds per message of
the whole process tree under master, and the ratio postpy/Postfix
(> 1 means postpy is faster / uses more CPU).

Usage (from the checkout, as root so Postfix can run)::

    .venv/bin/python benchmarks/accept_rate.py                  # 2000 x 1 KiB, 10 and 50 sessions
    .venv/bin/python benchmarks/accept_rate.py -m 5000 -s 20 -l 10240 -r 5
    .venv/bin/python benchmarks/accept_rate.py --generator python --new-connection
    .venv/bin/python benchmarks/accept_rate.py --only postpy    # no root needed
    .venv/bin/python benchmarks/accept_rate.py --postpy-param max_use=10000
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import benchlib


@dataclass
class Target:
    name: str
    port: int
    master_pid: int
    incoming: Path
    rcpt: str


@dataclass
class Runs:
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run_once(target: Target, generator: str, sessions: int, args: argparse.Namespace,
             runs: Runs) -> None:
    benchlib.clear_queue_dir(target.incoming)
    drive: Callable[..., benchlib.Load] = (benchlib.smtp_source if generator == "smtp-source"
                                           else benchlib.python_load)
    cpu_before = benchlib.tree_cpu(target.master_pid)
    load = drive(target.port, args.messages, sessions, args.size, sender="load@bench.example",
                 rcpt=target.rcpt, reuse=not args.new_connection, timeout=args.timeout)
    expected = args.messages - len(load.errors) if generator == "python" else args.messages
    # A 250 means the file is already in incoming/: this wait is a check, not a delay.
    try:
        benchlib.wait_for(lambda: benchlib.count_files(target.incoming) >= expected, 30,
                          f"{target.name}: {expected} files in incoming/")
    except AssertionError as exc:
        load.errors.append(str(exc))
    cpu = benchlib.tree_cpu(target.master_pid) - cpu_before
    runs.rates.append(load.rate)
    runs.latencies.extend(load.latencies)
    runs.cpu_ms.append(cpu * 1000 / max(1, expected))
    runs.errors.extend(load.errors)
    lat = (f", p50 {benchlib.percentile(load.latencies, 50) * 1000:.1f} ms"
           if load.latencies else "")
    print(f"  {target.name:<7} {generator:<11} {sessions:>3} sessions: {load.rate:7.1f} msg/s{lat}, "
          f"{runs.cpu_ms[-1]:.2f} ms CPU/msg, {len(load.errors)} errors", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--messages", type=int, default=2000, help="messages per run")
    parser.add_argument("-l", "--size", type=int, default=1024, help="body bytes per message")
    parser.add_argument("-s", "--sessions", default="10,50",
                        help="concurrent SMTP sessions, comma-separated list")
    parser.add_argument("-r", "--repeat", type=int, default=3, help="runs per system (median)")
    parser.add_argument("--generator", choices=("smtp-source", "python", "both"), default="both",
                        help="load generator (both: smtp-source for the rate, python for latency too)")
    parser.add_argument("--new-connection", action="store_true",
                        help="one message per SMTP connection (default: sessions are reused)")
    parser.add_argument("--only", choices=("postpy", "postfix"))
    parser.add_argument("--postpy-param", action="append", default=[], metavar="NAME=VALUE",
                        help="a main.cf setting for postpy (repeatable), e.g. max_use=10000")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run at most")
    args = parser.parse_args()
    sessions = [int(s) for s in args.sessions.split(",") if s.strip()]
    generators = ["smtp-source", "python"] if args.generator == "both" else [args.generator]
    if benchlib.SMTP_SOURCE is None and "smtp-source" in generators:
        print("smtp-source not installed (Debian package postfix): using the python client")
        generators = ["python"]

    print(f"# accept rate: {args.messages} messages x {args.size} bytes per run, "
          f"{'new connection per message' if args.new_connection else 'sessions reused'}, "
          f"median of {args.repeat}")
    print(f"# {benchlib.machine()}")
    with contextlib.ExitStack() as stack:
        targets: list[Target] = []
        if args.only in (None, "postpy"):
            mta = stack.enter_context(benchlib.postpy_system(
                accept_only=True, extra=benchlib.parse_params(args.postpy_param)))
            targets.append(Target("postpy", mta.port, mta.master_pid(), mta.queue_dir / "incoming",
                                  "root@mx.test.example"))
        if args.only in (None, "postfix"):
            why = benchlib.postfix_unavailable()
            if why:
                print(f"# postfix: skipped ({why})")
            else:
                postfix = stack.enter_context(benchlib.postfix_system(accept_only=True))
                targets.append(Target("postfix", postfix.port, benchlib.postfix_master_pid(postfix),
                                      postfix.base / "queue" / "incoming", "bob@pf.test"))
        results: dict[tuple[str, str, int], Runs] = {}
        for generator in generators:
            for count in sessions:
                for _ in range(args.repeat):
                    for target in targets:
                        runs = results.setdefault((target.name, generator, count), Runs())
                        run_once(target, generator, count, args, runs)
                        time.sleep(0.5)      # let the last writes settle between systems
        for target in targets:
            benchlib.clear_queue_dir(target.incoming)
    report(results, generators, sessions, [t.name for t in targets])


def report(results: dict[tuple[str, str, int], Runs], generators: list[str], sessions: list[int],
           names: list[str]) -> None:
    header = ["system", "generator", "sessions", "msg/s", "p50 ms", "p99 ms", "CPU ms/msg", "errors"]
    rows = []
    for generator in generators:
        for count in sessions:
            for name in names:
                runs = results[(name, generator, count)]
                p50, p99 = (f"{benchlib.percentile(runs.latencies, q) * 1000:.1f}"
                            if runs.latencies else "-" for q in (50, 99))
                rows.append([name, generator, str(count), f"{benchlib.median(runs.rates):.1f}",
                             p50, p99, f"{benchlib.median(runs.cpu_ms):.2f}", str(len(runs.errors))])
    print()
    benchlib.print_table(header, rows)
    if len(names) == 2:
        print()
        for generator in generators:
            for count in sessions:
                mine, theirs = (results[(n, generator, count)] for n in names)
                rate = benchlib.ratio(benchlib.median(mine.rates), benchlib.median(theirs.rates))
                cpu = benchlib.ratio(benchlib.median(mine.cpu_ms), benchlib.median(theirs.cpu_ms))
                print(f"postpy/postfix {generator:<11} {count:>3} sessions: rate {rate}, "
                      f"CPU per message {cpu}")
    failures = [e for runs in results.values() for e in runs.errors]
    for text in failures[:5]:
        print(f"error: {text}", file=sys.stderr)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
