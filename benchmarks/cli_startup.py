#!/usr/bin/env python3
"""Command start-up: wall time of ``sendmail -t < message`` and of ``mailq``, postpy beside Postfix.

Scripts and cron call these commands constantly, so their cost is mostly
start-up: the interpreter, the imports, reading main.cf.  Both systems run
at once on private temporary trees (accept-only, as in accept_rate.py:
submitted mail stops in ``incoming/``).  Each command runs ``--runs``
times after ``--warmup`` unmeasured runs, alternating between the
systems; the figure is the median wall time of the whole process, from
spawn to exit.  ``mailq`` runs first, on the still empty queues.

postpy's commands are .venv/bin/sendmail and .venv/bin/mailq with
``MAIL_CONFIG`` naming the instance; Postfix's are Debian's
/usr/sbin/sendmail and mailq with ``-C <config_directory>`` of the
private instance.  ``python -c pass`` (the venv's interpreter, its site-packages hooks
included) and ``python -I -S -c pass`` (no site at all) are measured too,
as the floors of any Python command; ``--importtime`` prints the
slowest imports of postpy's two commands (``python -X importtime``).

Usage (from the checkout, as root so Postfix can run)::

    .venv/bin/python benchmarks/cli_startup.py                  # 30 runs each
    .venv/bin/python benchmarks/cli_startup.py -n 100 --importtime
    .venv/bin/python benchmarks/cli_startup.py --only postpy    # no root needed
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import benchlib

POSTFIX_SENDMAIL = shutil.which("sendmail", path="/usr/sbin:/usr/lib") or "/usr/sbin/sendmail"
POSTFIX_MAILQ = shutil.which("mailq", path="/usr/bin:/usr/sbin") or "/usr/bin/mailq"
MESSAGE = "From: cron@{domain}\nTo: {rcpt}\nSubject: cli start-up bench\n\nhello from cron\n"


@dataclass
class Command:
    system: str
    what: str
    argv: list[str]
    env: dict[str, str] | None = None
    stdin: str | None = None
    expect: str = ""                 # a regex the output must match
    incoming: Path | None = None     # where a submission must arrive
    times: list[float] = field(default_factory=list)

    def run(self) -> float:
        start = time.perf_counter()
        done = subprocess.run(self.argv, input=self.stdin, env=self.env, capture_output=True,
                              text=True, timeout=60)
        elapsed = time.perf_counter() - start
        if done.returncode != 0 or not re.search(self.expect, done.stdout):
            raise SystemExit(f"{self.system} {self.what}: exit {done.returncode}, "
                             f"output {done.stdout[:200]!r} {done.stderr[:300]!r}")
        return elapsed


def postpy_commands(mta: benchlib.MTA) -> tuple[Command, Command]:
    env = mta.env()
    return (Command("postpy", "mailq (empty queue)", [str(benchlib.BIN / "mailq")], env,
                    expect=r"^Mail queue is empty"),
            Command("postpy", "sendmail -t", [str(benchlib.BIN / "sendmail"), "-t"], env,
                    MESSAGE.format(domain="bench.example", rcpt="root@mx.test.example"),
                    incoming=mta.queue_dir / "incoming"))


def postfix_commands(postfix: benchlib.PostfixInstance) -> tuple[Command, Command]:
    config = str(postfix.config_dir)
    return (Command("postfix", "mailq (empty queue)", [POSTFIX_MAILQ, "-C", config],
                    expect=r"^Mail queue is empty"),
            Command("postfix", "sendmail -t", [POSTFIX_SENDMAIL, "-C", config, "-t"], None,
                    MESSAGE.format(domain="pf.test", rcpt="bob@pf.test"),
                    incoming=postfix.base / "queue" / "incoming"))


def measure(commands: list[Command], runs: int, warmup: int) -> None:
    """Alternate between the commands, ``runs`` timed rounds after ``warmup``."""
    for round_number in range(warmup + runs):
        for command in commands:
            elapsed = command.run()
            if round_number >= warmup:
                command.times.append(elapsed)


def import_profile(argv: list[str], env: dict[str, str], stdin: str | None, top: int) -> list[str]:
    """The ``top`` slowest imports (cumulative) of a Python command."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], input=stdin, env=env,
                          capture_output=True, text=True, timeout=60)
    rows = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            rows.append((int(match.group(2)), len(match.group(3)), match.group(4)))
    total = sum(cumulative for cumulative, depth, _name in rows if depth == 1)
    rows.sort(reverse=True)
    lines = [f"total {total / 1000:.1f} ms of imports"]
    for cumulative, depth, name in rows[:top]:
        lines.append(f"{cumulative / 1000:7.1f} ms  {'  ' * (depth - 1)}{name}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=30, help="timed runs per command")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured runs first")
    parser.add_argument("--only", choices=("postpy", "postfix"))
    parser.add_argument("--importtime", action="store_true",
                        help="also list the slowest imports of postpy's commands")
    args = parser.parse_args()

    print(f"# command start-up: median wall time of {args.runs} runs after {args.warmup} warm-up runs")
    print(f"# {benchlib.machine()}")
    mailq: list[Command] = []
    sendmail: list[Command] = []
    floors = [Command("python", "python -c pass", [sys.executable, "-c", "pass"]),
              Command("python", "python -I -S -c pass", [sys.executable, "-I", "-S", "-c", "pass"])]
    with contextlib.ExitStack() as stack:
        if args.only in (None, "postpy"):
            mta = stack.enter_context(benchlib.postpy_system(accept_only=True))
            pair = postpy_commands(mta)
            mailq.append(pair[0])
            sendmail.append(pair[1])
        if args.only in (None, "postfix"):
            why = benchlib.postfix_unavailable()
            if why:
                print(f"# postfix: skipped ({why})")
            else:
                postfix = stack.enter_context(benchlib.postfix_system(accept_only=True))
                pair = postfix_commands(postfix)
                mailq.append(pair[0])
                sendmail.append(pair[1])
        measure([*mailq, *floors], args.runs, args.warmup)
        measure(sendmail, args.runs, args.warmup)
        if args.importtime and args.only != "postfix":
            env = dict(mta.env(), PYTHONDONTWRITEBYTECODE="1")
            for command in (mailq[0], sendmail[0]):
                print(f"\n# slowest imports of postpy {command.what}:")
                for line in import_profile(command.argv, env, command.stdin, 12):
                    print(f"#   {line}")
        for command in sendmail:
            check_submissions(command, args.runs + args.warmup)
    report(mailq + sendmail + floors)


def check_submissions(command: Command, expected: int) -> None:
    """Every submission must reach the queue (pickup, cleanup): a sanity check."""
    assert command.incoming is not None
    incoming = command.incoming
    try:
        benchlib.wait_for(lambda: benchlib.count_files(incoming) >= expected, 60,
                          f"{command.system}: {expected} submissions in {incoming}")
    except AssertionError as exc:
        raise SystemExit(str(exc)) from None


def report(commands: list[Command]) -> None:
    rows = [[c.system, c.what, f"{benchlib.median(c.times) * 1000:.1f}",
             f"{min(c.times) * 1000:.1f}", f"{benchlib.percentile(c.times, 90) * 1000:.1f}"]
            for c in commands if c.times]
    print()
    benchlib.print_table(["system", "command", "median ms", "min ms", "p90 ms"], rows)
    by_key = {(c.system, c.what): c for c in commands}
    for what in ("mailq (empty queue)", "sendmail -t"):
        mine, theirs = by_key.get(("postpy", what)), by_key.get(("postfix", what))
        if mine and theirs and mine.times and theirs.times:
            times = benchlib.ratio(benchlib.median(mine.times), benchlib.median(theirs.times))
            print(f"postpy/postfix {what}: {times} (> 1: postpy is slower)")


if __name__ == "__main__":
    main()
