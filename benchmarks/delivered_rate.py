#!/usr/bin/env python3
"""Delivered rate: SMTP in to a local user's Maildir, end to end, postpy beside Postfix.

The load and the clock are ``mta_bench.py`` from the shared bench kit
(``../shared/bench/mta_bench.py`` beside the checkout; ``--mta-bench``
names another copy; nothing of it is copied here).  It sends N messages
over C SMTP sessions and stops the clock when the N-th file appears in the
recipient's ``Maildir/new``; it also reads the CPU of the MTA's process
tree (master and every child) from /proc.

Both systems run at once, each on a private temporary tree on 127.0.0.1,
and deliver to the same throw-away Unix user with ``home_mailbox =
Maildir/``: postpy through its own local agent, Postfix through its
local(8) (``mydestination`` holds its hostname).  Runs alternate between
the systems, the Maildir emptied before each; everything else is each
system's default (both use a per-recipient concurrency of 2 for local
delivery, Postfix's default).  The figure is the median of ``--repeat``
runs; the ratio postpy/Postfix > 1 means postpy is faster.

Usage (from the checkout, as root: the recipient is a created Unix user)::

    .venv/bin/python benchmarks/delivered_rate.py               # 2000 msgs, 1 KiB and 100 KiB
    .venv/bin/python benchmarks/delivered_rate.py -m 5000 -c 50 --sizes 1024 -r 5
    .venv/bin/python benchmarks/delivered_rate.py --generator python   # per-message latency too
    .venv/bin/python benchmarks/delivered_rate.py --postpy-param max_use=10000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import benchlib

DEFAULT_MTA_BENCH = benchlib.ROOT.parent / "shared" / "bench" / "mta_bench.py"
KEYS = ("delivered_rate", "accept_rate", "lat_p50_ms", "lat_p99_ms", "mta_cpu_ms_per_msg")


@dataclass
class Target:
    name: str
    port: int
    rcpt: str
    pid_file: Path


def run_mta_bench(script: Path, target: Target, maildir: Path, size: int,
                  args: argparse.Namespace) -> dict[str, object]:
    """One mta_bench.py run against ``target``; its JSON result."""
    with tempfile.NamedTemporaryFile(prefix="mta-bench-", suffix=".json") as out:
        argv = [sys.executable, str(script), "--host", "127.0.0.1", "--port", str(target.port),
                "-n", str(args.messages), "-c", str(args.sessions), "--size", str(size),
                "--rcpt", target.rcpt, "--sender", "load@bench.example",
                "--maildir", str(maildir), "--clear", "--pids-cmd", f"cat {target.pid_file}",
                "--timeout", str(args.timeout), "--label", target.name, "--json-out", out.name]
        if args.generator == "smtp-source":
            argv.append("--use-smtp-source")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout + 120)
        lines = Path(out.name).read_text().splitlines()
    if not lines:
        raise SystemExit(f"{target.name}: mta_bench.py produced no result (exit {done.returncode}):\n"
                         f"{done.stdout}{done.stderr}")
    result: dict[str, object] = json.loads(lines[-1])
    if done.returncode != 0:
        result["failed"] = (done.stderr.strip() or done.stdout.strip())[-300:]
    return result


def figure(results: list[dict[str, object]], key: str) -> float | None:
    values = [float(v) for r in results if isinstance(v := r.get(key), int | float)]
    return benchlib.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--messages", type=int, default=2000, help="messages per run")
    parser.add_argument("-c", "--sessions", type=int, default=10, help="concurrent SMTP sessions")
    parser.add_argument("--sizes", default="1024,102400", help="body sizes in bytes, comma-separated")
    parser.add_argument("-r", "--repeat", type=int, default=3, help="runs per system and size (median)")
    parser.add_argument("--generator", choices=("smtp-source", "python"),
                        default="smtp-source" if benchlib.SMTP_SOURCE else "python")
    parser.add_argument("--only", choices=("postpy", "postfix"))
    parser.add_argument("--postpy-param", action="append", default=[], metavar="NAME=VALUE",
                        help="a main.cf setting for postpy (repeatable), e.g. max_use=10000")
    parser.add_argument("--mta-bench", type=Path, default=DEFAULT_MTA_BENCH,
                        help=f"path of mta_bench.py (default {DEFAULT_MTA_BENCH})")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run at most")
    args = parser.parse_args()
    if not args.mta_bench.is_file():
        raise SystemExit(f"{args.mta_bench}: not found. This benchmark uses the shared bench kit's "
                         f"mta_bench.py (expected at ../shared/bench/mta_bench.py beside the "
                         f"checkout); give its path with --mta-bench.")
    if not benchlib.IS_ROOT:
        raise SystemExit("run as root: the recipient is a throw-away Unix user created for the run")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    print(f"# delivered rate: {args.messages} messages per run, {args.sessions} sessions, "
          f"generator {args.generator}, median of {args.repeat}, to a local user's Maildir")
    print(f"# {benchlib.machine()}")
    base = Path(tempfile.mkdtemp(prefix="postpy-bench-home-"))
    os.chmod(base, 0o755)
    results: dict[tuple[str, int], list[dict[str, object]]] = {}
    names: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            user = stack.enter_context(benchlib.bench_user(base))
            maildir = Path(user.pw_dir) / "Maildir"
            targets: list[Target] = []
            if args.only in (None, "postpy"):
                mta = stack.enter_context(benchlib.postpy_system(
                    home_mailbox="Maildir/", extra=benchlib.parse_params(args.postpy_param)))
                targets.append(Target("postpy", mta.port, f"{user.pw_name}@mx.test.example",
                                      mta.queue_dir / "pid" / "master.pid"))
            if args.only in (None, "postfix"):
                why = benchlib.postfix_unavailable()
                if why:
                    print(f"# postfix: skipped ({why})")
                else:
                    postfix = stack.enter_context(benchlib.postfix_system(
                        mydestination="pf.test, localhost", virtual_mailbox_domains="",
                        home_mailbox="Maildir/"))
                    targets.append(Target("postfix", postfix.port, f"{user.pw_name}@pf.test",
                                          postfix.base / "queue" / "pid" / "master.pid"))
            names = [t.name for t in targets]
            for size in sizes:
                for _ in range(args.repeat):
                    for target in targets:
                        result = run_mta_bench(args.mta_bench, target, maildir, size, args)
                        results.setdefault((target.name, size), []).append(result)
                        print(f"  {target.name:<7} {size:>7} bytes: delivered "
                              f"{result.get('delivered_rate')} msg/s, accepted "
                              f"{result.get('accept_rate')} msg/s, "
                              f"{result.get('mta_cpu_ms_per_msg')} ms CPU/msg, "
                              f"{result.get('delivered')}/{args.messages} delivered"
                              + (f", FAILED: {result['failed']}" if "failed" in result else ""),
                              flush=True)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(base)
    report(results, names, sizes)


def report(results: dict[tuple[str, int], list[dict[str, object]]], names: list[str],
           sizes: list[int]) -> None:
    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"

    rows = [[name, str(size), *(show(figure(results[(name, size)], key)) for key in KEYS),
             str(sum("failed" in r for r in results[(name, size)]))]
            for size in sizes for name in names]
    print()
    benchlib.print_table(["system", "size", "delivered/s", "accepted/s", "p50 ms", "p99 ms",
                          "CPU ms/msg", "failed runs"], rows)
    if len(names) == 2:
        print()
        for size in sizes:
            mine, theirs = results[(names[0], size)], results[(names[1], size)]
            print(f"postpy/postfix {size:>7} bytes: delivered rate "
                  f"{benchlib.ratio(figure(mine, KEYS[0]) or 0, figure(theirs, KEYS[0]) or 0)}, "
                  f"CPU per message "
                  f"{benchlib.ratio(figure(mine, KEYS[4]) or 0, figure(theirs, KEYS[4]) or 0)}")
    if any("failed" in r for runs in results.values() for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
