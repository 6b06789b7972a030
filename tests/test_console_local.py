"""`cabguard console --local`: this terminal relayed to a gateway's console pty."""

import os
import subprocess
import sys
import termios
import time

import pytest

from controller.console.auth import code_at
from controller.console.local import link_path
from controller.errors import UsageError
from tests.test_console_server import Terminal, serve

CABGUARD = [sys.executable, "-m", "controller.cli.main", "console", "--local"]


@pytest.fixture
def console(tmp_path):
    server, view, store = serve(tmp_path)
    yield tmp_path / "console", view, store
    server.stop()


def test_a_script_gets_each_answer_before_its_next_line(console):
    link, view, store = console
    script = "status\nlogin ana {}\nmaint start 20m\nlogout\n".format(code_at(store.people["ana"].secret, time.time()))
    done = subprocess.run(CABGUARD + ["--link", str(link), "--timeout", "10"], input=script, text=True,
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("gw-1 (anyone)> status\nmode armed\ngw-1 (anyone)> login ana ")
    assert "Logged in as ana (technician).\ngw-1 (technician ana)> maint start 20m\nok\n" in out
    assert out.endswith("logout\nLogged out.\ngw-1 (anyone)> \n")
    assert view.submitted == [("maint start", (3, 1200000), "ana")]


def test_a_script_line_without_a_prompt_fails_clearly(console):
    link, _view, store = console
    script = "login ana {}\nsignals\nstatus\n".format(code_at(store.people["ana"].secret, time.time()))
    done = subprocess.run(CABGUARD + ["--link", str(link), "--timeout", "0.5"], input=script, text=True,
                          capture_output=True, timeout=30)
    assert done.returncode == 1
    assert "no prompt within 0.5 s after 'signals'" in done.stderr and "Traceback" not in done.stderr


def test_on_a_terminal_keys_pass_raw_ctrl_c_reaches_the_console_and_ctrl_bracket_quits(console):
    link, view, _store = console
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen(CABGUARD + ["--link", str(link)], stdin=slave, stdout=slave, stderr=subprocess.PIPE)
    me = Terminal.__new__(Terminal)
    me.fd, me.seen = master, b""
    try:
        me.expect(b"gw-1 (anyone)> ")
        os.write(master, b"statx\x7fus\r")       # DEL reaches the console, which edits the line
        me.expect(b"mode armed\r\ngw-1 (anyone)> ")
        os.write(master, b"vers\x03")           # Ctrl-C: the console abandons the line, we live on
        me.expect(b"^C\r\ngw-1 (anyone)> ")
        assert proc.poll() is None
        os.write(master, b"\x1d")               # Ctrl-] quits
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        after = termios.tcgetattr(slave)
        os.close(slave)
        os.close(master)
    assert after == before                      # the terminal is back as it was
    assert b"Ctrl-] quits" in proc.stderr.read()


def test_the_link_comes_from_the_site_config(tmp_path):
    from tests.test_runtime import SITE

    site = tmp_path / "site.toml"
    base = SITE.format(d=tmp_path, port="/dev/ttyUSB0")
    site.write_text(base + '\n[console]\nport = "pty:{0}/console"\npeople = "{0}/people.toml"\n'.format(tmp_path))
    assert link_path(None, str(site)) == tmp_path / "console"
    assert link_path("/x/y", str(site)) == __import__("pathlib").Path("/x/y")
    site.write_text(base + '\n[console]\nport = "/dev/ttyAMA0"\npeople = "{}/people.toml"\n'.format(tmp_path))
    with pytest.raises(UsageError, match=r"\[console\] port must be pty:PATH for --local"):
        link_path(None, str(site))
    with pytest.raises(UsageError, match="give --link PATH"):
        link_path(None, None)
