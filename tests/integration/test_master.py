"""master and `postpy start|stop|status|reload`: real processes, real sockets."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import time

import pytest
from conftest import IS_ROOT, MAIL_OWNER, ROOT, free_port, wait_for

PROBE = ROOT / "tests" / "data" / "daemons" / "probe"


def probe_cf(extra: str = "") -> str:
    return (
        f"127.0.0.1:{{port}} inet n - n - 4 {PROBE}\n"
        f"probe      unix  - - n - - {PROBE} hello\n"
        f"keeper     unix  - - n 60 1 {PROBE} persistent\n"
        f"rootprobe  unix  - n n - 1 {PROBE}\n" + extra
    )


def ask(mta, where: str | int = "inet", send: bool = True, timeout: float = 10.0) -> dict:
    if isinstance(where, int) or where == "inet":
        port = mta.port if where == "inet" else where
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        sock.connect(str(mta.queue_dir / where))
    with sock:
        sock.sendall(b"x")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def test_start_status_titles_and_stop(mta_factory):
    mta = mta_factory(master_cf=probe_cf())
    assert mta.run("postpy", "status").returncode == 0
    reply = ask(mta)
    assert reply["cwd"] == str(mta.queue_dir)
    # the persistent service runs without being asked, under its title
    titles = wait_for(lambda: [a for a in mta.children().values() if "postpy/probe" in a], 10, "titles")
    assert titles
    master = mta.master_pid()
    kids = list(mta.children())
    assert mta.run("postpy", "stop").returncode == 0
    wait_for(lambda: mta.proc.poll() is not None, 20, "master exit")
    for pid in [master, *kids]:
        assert not os.path.exists(f"/proc/{pid}"), f"process {pid} left behind"
    assert mta.run("postpy", "status").returncode == 1


def test_daemonized_start_and_second_start_refused(mta_factory):
    mta = mta_factory(master_cf=probe_cf(), start=False)
    try:
        started = mta.run("postpy", "start")
        assert started.returncode == 0, started.stderr
        assert mta.run("postpy", "status").returncode == 0
        again = mta.run("postpy", "start")
        assert again.returncode == 1
        assert "already running" in again.stderr
        # even a master started directly must refuse the locked queue
        direct = mta.run("postpy", "start-fg")
        assert direct.returncode != 0
        assert ask(mta)["pid"] > 0
    finally:
        stopped = mta.run("postpy", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert mta.run("postpy", "status").returncode == 1


def test_killed_child_is_replaced(mta_factory):
    mta = mta_factory(master_cf=probe_cf())
    first = ask(mta)["pid"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: first not in mta.children(), 10, "child reaped")
    second = ask(mta)["pid"]
    assert second != first
    keeper = wait_for(lambda: [p for p, a in mta.children().items() if "keeper" in a], 10, "keeper")
    os.kill(keeper[0], signal.SIGKILL)
    replaced = wait_for(lambda: [p for p, a in mta.children().items() if "keeper" in a and p != keeper[0]],
                        15, "keeper restarted")
    assert replaced


def test_failed_starts_back_off_from_a_second(mta_factory):
    """An error exit before ready throttles: 1 s, then 2 s, then 4 s ... (not a flat minute)."""
    mta = mta_factory(master_cf=probe_cf(f"crash unix - - n - - {PROBE} crash\n"),
                      service_throttle_time="60s")
    # A waiting connection keeps the socket readable: without throttling,
    # master would start one crashing process after another.
    with socket.socket(socket.AF_UNIX) as waiting:
        waiting.connect(str(mta.queue_dir / "private" / "crash"))
        wait_for(lambda: mta.log().count("exit status 3") >= 3, 25, "three failed starts")
        assert mta.log().count("probe: bad command startup -- throttling") == 3
        # The fourth start waits 4 s after the third failure.
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert mta.log().count("exit status 3") == 3
            time.sleep(0.1)


def test_signal_death_of_a_young_process_is_not_throttled(mta_factory, shared_dir):
    """An OOM kill or an admin's kill before ready: replaced at once, never throttled."""
    marker = shared_dir / "killed"
    mta = mta_factory(master_cf=probe_cf(f"young unix - - n - 1 {PROBE} killself {marker}\n"),
                      service_throttle_time="60s")
    reply = ask(mta, "private/young", timeout=20)
    assert marker.exists() and reply["args"] == ["killself", str(marker)]
    assert "killed by signal 9" in mta.log()
    assert "throttling" not in mta.log()


def test_reload_while_a_child_starts_kills_nothing(mta_factory):
    """SIGUSR1 that reaches a daemon before its handler waits for it."""
    mta = mta_factory(master_cf=probe_cf(f"slow unix - - n - 1 {PROBE} slowstart\n"))
    with socket.socket(socket.AF_UNIX) as waiting:
        waiting.settimeout(20)
        waiting.connect(str(mta.queue_dir / "private" / "slow"))
        # its command line while it sleeps, its title ("-n slow") after that
        wait_for(lambda: any("probe slowstart" in a or "-n slow" in a for a in mta.children().values()),
                 10, "the slow child")
        assert mta.run("postpy", "reload").returncode == 0
        mta.wait_log(r"reload -- version")
        waiting.sendall(b"x")
        reply = json.loads(waiting.recv(4096))
        assert reply["args"] == ["slowstart"]
    log = mta.log()
    assert "killed by signal" not in log
    assert "throttling" not in log


def test_reload_picks_up_changes_and_keeps_connections(mta_factory):
    mta = mta_factory(master_cf=probe_cf(), mail_name="before")
    held = socket.create_connection(("127.0.0.1", mta.port), timeout=10)
    wait_for(lambda: any("-n 127.0.0.1" in a for a in mta.children().values()), 10, "inet child")
    new_port = free_port()
    cf = mta.config_dir / "master.cf"
    cf.write_text(cf.read_text() + f"127.0.0.1:{new_port} inet n - n - 1 {PROBE} second\n")
    mta.params["mail_name"] = "after"
    mta.write_main_cf(mta.params)
    assert mta.run("postpy", "reload").returncode == 0
    mta.wait_log(r"reload -- version")
    reply = ask(mta, new_port)
    assert reply["args"] == ["second"] and reply["param"] == "after"
    assert ask(mta)["param"] == "after"
    # the connection accepted before the reload is still served by the old process
    held.sendall(b"x")
    old = json.loads(held.recv(4096))
    assert old["param"] == "before"
    held.close()


def test_bad_master_cf_reports_file_and_line(mta_factory):
    mta = mta_factory(master_cf=probe_cf("broken unix - - n\n"), start=False)
    result = mta.run("postpy", "check")
    assert result.returncode != 0
    assert "master.cf, line 5" in result.stderr


def test_bad_main_cf_reports_file_and_line(mta_factory):
    mta = mta_factory(master_cf=probe_cf(), start=False)
    main = mta.config_dir / "main.cf"
    main.write_text(main.read_text() + "this line is wrong\n")
    result = mta.run("postpy", "start-fg")
    assert result.returncode != 0
    assert f"{main}, line" in result.stderr and "missing '='" in result.stderr


@pytest.mark.skipif(not IS_ROOT, reason="privilege separation needs root")
def test_children_run_as_mail_owner_unless_unpriv_n(mta_factory):
    owner = pwd.getpwnam(MAIL_OWNER)
    mta = mta_factory(master_cf=probe_cf())
    reply = ask(mta)
    assert (reply["uid"], reply["euid"], reply["gid"]) == (owner.pw_uid, owner.pw_uid, owner.pw_gid)
    keeper = ask(mta, "public/keeper") if (mta.queue_dir / "public/keeper").exists() else ask(mta, "private/keeper")
    assert keeper["uid"] == owner.pw_uid
    privileged = ask(mta, "private/rootprobe")
    assert privileged["uid"] == 0
    st = os.stat(mta.queue_dir / "incoming")
    assert (st.st_uid, st.st_mode & 0o777) == (owner.pw_uid, 0o700)
    ps = subprocess.run(["ps", "-ww", "-o", "user=,args=", "-e"], capture_output=True, text=True).stdout
    assert any(line.split()[0] in (MAIL_OWNER, str(owner.pw_uid)) and "postpy/probe" in line
               for line in ps.splitlines())


def test_bad_reload_keeps_master_and_old_configuration(mta_factory):
    mta = mta_factory(master_cf=probe_cf())
    master = mta.master_pid()
    cf = mta.config_dir / "master.cf"
    good = cf.read_text()
    cf.write_text(good + f"broken unix - - n - \u00b2 {PROBE}\n")      # not a number to int()
    assert mta.run("postpy", "reload").returncode == 0
    mta.wait_log(r"reload failed, keeping the old configuration: .*bad maxproc field")
    # a service whose socket name is taken by a plain file
    (mta.queue_dir / "private" / "blocked").write_text("not a socket")
    cf.write_text(good + f"blocked unix - - n - - {PROBE}\n")
    assert mta.run("postpy", "reload").returncode == 0
    mta.wait_log(r"reload: bind .*private/blocked")
    assert mta.master_pid() == master and mta.proc.poll() is None
    assert ask(mta)["pid"] > 0                                       # still serving


def _held(mta, count: int) -> list[socket.socket]:
    conns = [socket.create_connection(("127.0.0.1", mta.port), timeout=10) for _ in range(count)]
    return conns


def test_maxproc_bounds_the_processes_of_a_service(mta_factory):
    """6 connections held open against maxproc 4: 4 processes, 2 wait."""
    mta = mta_factory(master_cf=probe_cf())
    held = _held(mta, 6)
    try:
        wait_for(lambda: sum("-n 127.0.0.1" in a for a in mta.children().values()) == 4, 10, "4 children")
        deadline = time.monotonic() + 1.0                      # and no fifth appears
        while time.monotonic() < deadline:
            assert sum("-n 127.0.0.1" in a for a in mta.children().values()) <= 4
            time.sleep(0.05)
    finally:
        for conn in held:
            conn.close()


def test_max_use_and_max_idle_end_a_daemon(mta_factory):
    mta = mta_factory(master_cf=probe_cf(), max_use="1", max_idle="1s")
    first = ask(mta)["pid"]
    second = ask(mta)["pid"]
    assert second != first                                     # max_use = 1: one connection each
    wait_for(lambda: not any("-n 127.0.0.1" in a for a in mta.children().values()), 15,
             "the idle inet daemon to exit (max_idle)")
    assert "-n keeper" in " ".join(mta.children().values())   # a wakeup service is kept running
