#!/usr/bin/env python3
"""Relay throughput: messages/second through postpy and through Postfix, side by side.

Each system runs on a private temporary tree on 127.0.0.1 and relays
everything to its own Postfix ``smtp-sink`` (``relayhost =
[127.0.0.1]:<sink port>``).  Postfix's ``smtp-source`` injects N messages
over SMTP into the system's smtpd; the clock runs from the first
connection until the system's log shows N ``status=sent`` lines, so the
number covers receive, queue (with fsync), schedule and relay.  Both
systems are measured in one run on the same machine and the ratio is
printed; absolute numbers mean little across machines.

Usage (from the checkout, after ``make test`` installed the peers)::

    .venv/bin/python benchmarks/smtp_relay.py                 # 2000 x 1 KiB, both systems
    .venv/bin/python benchmarks/smtp_relay.py -m 5000 -l 102400 -s 20
    .venv/bin/python benchmarks/smtp_relay.py --only postpy   # no root needed

Postfix's master must start as root; as an ordinary user only postpy is
measured.  Reuses the test harness (tests/conftest.py's MTA,
tests/integration's SmtpSink and PostfixInstance) so the set-up is the one
the tests prove.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

from conftest import MTA, ensure_system_users  # noqa: E402
from postfixpeer import SMTP_SOURCE, PostfixInstance, unavailable  # noqa: E402
from smtppeers import SMTP_SINK, SmtpSink  # noqa: E402


@dataclass
class Result:
    system: str
    messages: int
    inject_seconds: float
    total_seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.total_seconds if self.total_seconds else 0.0


def count_sent(log: Callable[[], str], sink_port: int) -> int:
    return len(re.findall(rf"relay=\S*\[127\.0\.0\.1\]:{sink_port}, .*status=sent", log()))


def run_load(system: str, smtpd_port: int, log: Callable[[], str], sink_port: int,
             args: argparse.Namespace) -> Result:
    assert SMTP_SOURCE
    start = time.monotonic()
    done = subprocess.run([SMTP_SOURCE, "-s", str(args.sessions), "-m", str(args.messages),
                           "-l", str(args.size), "-f", "load@bench.test", "-t", "sink@remote.test",
                           f"127.0.0.1:{smtpd_port}"], capture_output=True, text=True,
                          timeout=args.timeout)
    injected = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"{system}: smtp-source failed: {done.stderr.strip()}")
    deadline = start + args.timeout
    while count_sent(log, sink_port) < args.messages:
        if time.monotonic() > deadline:
            raise SystemExit(f"{system}: only {count_sent(log, sink_port)} of {args.messages} "
                             f"relayed within {args.timeout}s")
        time.sleep(0.05)
    return Result(system, args.messages, injected, time.monotonic() - start)


def bench_postpy(args: argparse.Namespace) -> Result:
    ensure_system_users()
    base = Path(tempfile.mkdtemp(prefix="postpy-bench-"))
    os.chmod(base, 0o755)
    with SmtpSink(dump=False) as sink:
        mta = MTA(base, None, {"relayhost": f"[127.0.0.1]:{sink.port}", "myhostname": "bench.postpy.test",
                               "mydestination": "", "max_idle": "300s"})
        try:
            mta.start()
            return run_load("postpy", mta.port, mta.log, sink.port, args)
        finally:
            mta.stop()
            shutil.rmtree(base, ignore_errors=True)


def bench_postfix(args: argparse.Namespace) -> Result:
    with SmtpSink(dump=False) as sink:
        with PostfixInstance(relayhost=f"[127.0.0.1]:{sink.port}", myhostname="bench.postfix.test",
                             virtual_mailbox_domains="") as postfix:
            return run_load("postfix", postfix.port, postfix.log, sink.port, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--messages", type=int, default=2000)
    parser.add_argument("-l", "--size", type=int, default=1024, help="message size in bytes")
    parser.add_argument("-s", "--sessions", type=int, default=10, help="parallel smtp-source sessions")
    parser.add_argument("--only", choices=("postpy", "postfix"))
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    if SMTP_SINK is None or SMTP_SOURCE is None:
        raise SystemExit("smtp-sink/smtp-source missing: run scripts/test-deps as root (Debian package postfix)")
    results = []
    if args.only in (None, "postpy"):
        results.append(bench_postpy(args))
    if args.only in (None, "postfix"):
        why = unavailable()
        if why:
            print(f"postfix: skipped ({why})")
        else:
            results.append(bench_postfix(args))
    print(f"{args.messages} messages of {args.size} bytes, {args.sessions} SMTP sessions, "
          f"relayed to smtp-sink")
    print(f"{'system':<8} {'inject s':>9} {'total s':>8} {'msg/s':>8}")
    for r in results:
        print(f"{r.system:<8} {r.inject_seconds:>9.2f} {r.total_seconds:>8.2f} {r.rate:>8.1f}")
    if len(results) == 2 and results[1].rate:
        print(f"postpy/postfix throughput ratio: {results[0].rate / results[1].rate:.2f}")


if __name__ == "__main__":
    main()
