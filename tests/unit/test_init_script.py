"""The LSB init script reads the settings file of its own installation."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def installer(tmp_path: Path, initdir: str) -> object:
    spec = importlib.util.spec_from_file_location("postpy_install", ROOT / "scripts" / "install.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = argparse.Namespace(destdir=str(tmp_path / "stage"), prefix="/opt/pp", sysconfdir="/opt/pp/etc",
                              spooldir="/opt/pp/spool", initdir=initdir, unitdir="/opt/pp/systemd",
                              aliases="/opt/pp/etc/aliases", python="/usr/bin/python3")
    return module.Installer(args)


@pytest.mark.parametrize(("initdir", "defaults"), [
    ("/etc/init.d", "/etc/default/postpy"),
    ("/opt/pp/etc/init.d", "/opt/pp/etc/default/postpy"),
])
def test_defaults_file_follows_the_install(tmp_path: Path, initdir: str, defaults: str) -> None:
    script = installer(tmp_path, initdir).substitute(  # type: ignore[attr-defined]
        (ROOT / "etc" / "init.d" / "postpy").read_text())
    assert f"DEFAULTS=${{POSTPY_DEFAULTS:-{defaults}}}" in script
    assert "@" not in script.split("### END INIT INFO")[1].replace("$@", "")


def test_script_reads_the_file_beside_its_init_directory(tmp_path: Path) -> None:
    """Installed under tmp_path/etc/init.d, the script takes POSTPY from
    tmp_path/etc/default/postpy (and not from /etc/default/postpy)."""
    initdir = tmp_path / "etc" / "init.d"
    initdir.mkdir(parents=True)
    (tmp_path / "etc" / "default").mkdir()
    (tmp_path / "etc" / "default" / "postpy").write_text(f"POSTPY={tmp_path}/from-defaults\n")
    script = initdir / "postpy"
    script.write_text(installer(tmp_path, str(initdir)).substitute(  # type: ignore[attr-defined]
        (ROOT / "etc" / "init.d" / "postpy").read_text()))
    env = {k: v for k, v in os.environ.items() if k != "POSTPY_DEFAULTS"}
    out = subprocess.run(["sh", str(script), "status"], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 4 and f"({tmp_path}/from-defaults)" in out.stdout, out
