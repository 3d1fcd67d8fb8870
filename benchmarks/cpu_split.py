#!/usr/bin/env python3
"""Where postpy's CPU goes: milliseconds per message for each daemon, under load.

Starts postpy on a private temporary tree (delivering to a throw-away
user's Maildir, or ``--accept-only``), warms it up, then sends N messages
with ``smtp-source`` (or benchlib's python client) and reads the user and
system CPU of every process under master from /proc before and after.
Processes are grouped by program (their title ``postpy/<program>``).  CPU
of processes that exited during the run (``max_use`` reached) can only be
read as master's reaped-children total; it is shown on its own line.

``--py-spy FILE`` also records a sampling profile of every daemon while
the load runs (``py-spy record --subprocesses --gil --format raw``; py-spy
is not a dependency: ``.venv/bin/pip install py-spy`` first) and prints the
hottest functions per daemon: ``self`` is time in the function's own
lines, ``total`` includes what it calls.  ``--gil`` keeps only samples
holding the interpreter lock, i.e. Python CPU; kernel time (fsync, file
creation) shows in the /proc figures instead.

Usage (from the checkout, as root for the Maildir recipient)::

    .venv/bin/python benchmarks/cpu_split.py                         # 2000 x 1 KiB
    .venv/bin/python benchmarks/cpu_split.py -l 102400 --py-spy /tmp/prof.txt
    .venv/bin/python benchmarks/cpu_split.py --accept-only --new-connection
    .venv/bin/python benchmarks/cpu_split.py --postpy-param max_use=10000
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import benchlib

Sample = dict[int, tuple[int, int, int, int, str]]     # pid -> ppid, utime, stime, reaped, title


def processes(root: int) -> Sample:
    """``root`` and its descendants: CPU ticks and process title."""
    table: Sample = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        table[int(entry)] = (int(fields[1]), int(fields[11]), int(fields[12]),
                             int(fields[13]) + int(fields[14]), title)
    children = collections.defaultdict(list)
    for pid, row in table.items():
        children[row[0]].append(pid)
    tree: Sample = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in tree:
            tree[pid] = table[pid]
            todo.extend(children[pid])
    return tree


def program(title: str) -> str:
    if "start-fg" in title or "master" in title.split("/")[-1:]:
        return "master"
    match = re.search(r"postpy/(\w+)", title) or re.search(r"libexec/(\w+)", title)
    return match.group(1) if match else title[:30]


def split(before: Sample, after: Sample, root: int, messages: int) -> list[list[str]]:
    ms = 1000 / os.sysconf("SC_CLK_TCK") / messages
    totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for pid, (_ppid, utime, stime, _reaped, title) in after.items():
        old = before.get(pid)
        row = totals[program(title)]
        row[0] += utime - (old[1] if old else 0)
        row[1] += stime - (old[2] if old else 0)
        row[2] += 0 if old else 1
    rows = [[name, f"{u * ms:.2f}", f"{s * ms:.2f}", f"{(u + s) * ms:.2f}", str(new)]
            for name, (u, s, new) in sorted(totals.items(), key=lambda kv: -sum(kv[1][:2]))]
    reaped = after[root][3] - before[root][3]
    rows.append(["(exited)", "-", "-", f"{reaped * ms:.2f}", "-"])
    everything = sum(u + s for u, s, _new in totals.values()) + reaped
    rows.append(["total", "-", "-", f"{everything * ms:.2f}", "-"])
    return rows


def hottest(profile: Path, top: int) -> None:
    """Per daemon: the functions with the most samples (self and total)."""
    per: dict[str, list[collections.Counter[str]]] = collections.defaultdict(
        lambda: [collections.Counter(), collections.Counter()])
    counts: collections.Counter[str] = collections.Counter()
    for line in profile.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        frames = stack.split(";")
        titles = [f for f in frames if f.startswith("process ")]
        code = [f for f in frames if not f.startswith("process ")]
        name = program(titles[-1]) if titles else "?"
        n = int(number)
        counts[name] += n
        if code:
            per[name][0][code[-1]] += n
        for frame in set(code):
            per[name][1][frame] += n
    for name, n in counts.most_common():
        print(f"\n## {name}: {n} samples")
        own, total = per[name]
        for label, counter in (("self", own), ("total", total)):
            for frame, c in counter.most_common(top):
                if label == "total" and c == n:
                    continue                 # the entry points: every sample has them
                print(f"  {label:5} {100 * c / n:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--messages", type=int, default=2000)
    parser.add_argument("-l", "--size", type=int, default=1024, help="body bytes per message")
    parser.add_argument("-s", "--sessions", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=300, help="messages sent before measuring")
    parser.add_argument("--accept-only", action="store_true", help="no qmgr: mail stops in incoming/")
    parser.add_argument("--new-connection", action="store_true", help="one message per connection")
    parser.add_argument("--generator", choices=("smtp-source", "python"),
                        default="smtp-source" if benchlib.SMTP_SOURCE else "python")
    parser.add_argument("--postpy-param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--py-spy", type=Path, metavar="FILE", help="record a profile into FILE")
    parser.add_argument("--top", type=int, default=15, help="functions listed per daemon")
    args = parser.parse_args()
    spy = shutil.which("py-spy", path=f"{benchlib.BIN}:{os.environ.get('PATH', '')}")
    if args.py_spy and spy is None:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy (not a postpy dependency)")
    if not args.accept_only and not benchlib.IS_ROOT:
        raise SystemExit("run as root (the recipient is a created Unix user), or use --accept-only")
    drive: Callable[..., benchlib.Load] = (benchlib.smtp_source if args.generator == "smtp-source"
                                           else benchlib.python_load)
    print(f"# cpu split: {args.messages} x {args.size} bytes, {args.sessions} sessions, "
          f"{'accept only' if args.accept_only else 'delivered to Maildir'}, {args.generator}")
    print(f"# {benchlib.machine()}")
    base = Path(tempfile.mkdtemp(prefix="postpy-bench-home-"))
    os.chmod(base, 0o755)
    try:
        with contextlib.ExitStack() as stack:
            params = benchlib.parse_params(args.postpy_param)
            if args.accept_only:
                rcpt = "root@mx.test.example"
                mta = stack.enter_context(benchlib.postpy_system(accept_only=True, extra=params))
                where = mta.queue_dir / "incoming"
            else:
                user = stack.enter_context(benchlib.bench_user(base))
                rcpt, where = f"{user.pw_name}@mx.test.example", Path(user.pw_dir) / "Maildir" / "new"
                mta = stack.enter_context(benchlib.postpy_system(home_mailbox="Maildir/", extra=params))

            def delivered() -> int:
                return benchlib.count_files(where) if where.exists() else 0

            root = mta.master_pid()

            def send(count: int) -> benchlib.Load:
                goal = delivered() + count
                load = drive(mta.port, count, args.sessions, args.size, sender="load@bench.example",
                             rcpt=rcpt, reuse=not args.new_connection)
                benchlib.wait_for(lambda: delivered() >= goal, 600, f"{goal} messages in {where}")
                return load

            send(args.warmup)
            recorder = None
            if args.py_spy:
                recorder = subprocess.Popen(
                    [str(spy), "record", "--pid", str(root), "--subprocesses", "--gil", "--format",
                     "raw", "--rate", "200", "--output", str(args.py_spy)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            before = processes(root)
            load = send(args.messages)
            after = processes(root)
            if recorder is not None:
                recorder.send_signal(signal.SIGINT)
                recorder.communicate(timeout=60)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"# SMTP accept {load.rate:.1f} msg/s")
    print()
    benchlib.print_table(["daemon", "user ms/msg", "sys ms/msg", "CPU ms/msg", "new processes"],
                         split(before, after, root, args.messages))
    if args.py_spy:
        hottest(args.py_spy, args.top)


if __name__ == "__main__":
    main()
