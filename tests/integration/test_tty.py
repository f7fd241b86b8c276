"""`docker run -it` and `docker exec -it` through a real pseudo-terminal."""

import re

import pexpect
import pytest

PROMPT = "PS1READY"


def spawn(daemon, args, rows=24, cols=80):
    child = pexpect.spawn("docker", args, env=daemon.env(), dimensions=(rows, cols),
                          encoding="utf-8", timeout=20)
    return child


_seq = iter(range(1, 1_000_000))


def ready_shell(child):
    # A fixed prompt, whatever the image's default PS1 is.
    child.sendline(f"export PS1={PROMPT}'$ '")
    child.expect(f"{PROMPT}\\$ ")


def run_cmd(child, cmd) -> str:
    """Run cmd in the interactive shell and return its output. Markers around
    it keep prompt redraws (e.g. after SIGWINCH) from shifting the output."""
    n = next(_seq)
    # the markers are split in the typed line so the echo of it never matches
    child.sendline(f"echo BEGIN''{n}; {cmd}; echo END''{n}")
    child.expect(f"BEGIN{n}\r\n")
    child.expect(f"END{n}\r\n")
    return child.before.replace("\r", "").strip()


def finish(child, code):
    child.sendline(f"exit {code}")
    child.expect(pexpect.EOF, timeout=20)
    child.close()
    return child.exitstatus


def test_run_it_tty_input_resize_exit_code(daemon, names):
    n = names("tty")
    child = spawn(daemon, ["run", "-it", "--rm", "--name", n, "busybox", "sh"], rows=24, cols=80)
    try:
        ready_shell(child)
        assert re.fullmatch(r"/dev/pts/\d+", run_cmd(child, "tty")), "stdin is not a pty"
        assert run_cmd(child, "stty size") == "24 80"
        child.setwinsize(33, 101)
        # the CLI sends the resize after SIGWINCH; give it a moment
        for _ in range(20):
            size = run_cmd(child, "stty size")
            if size == "33 101":
                break
        assert size == "33 101"
        assert run_cmd(child, "echo $TERM") == "xterm"
        assert finish(child, 7) == 7
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_run_it_typed_input_reaches_process(daemon, names):
    child = spawn(daemon, ["run", "-it", "--rm", "--name", names("ttyin"), "busybox", "sh", "-c",
                           "read line; echo got:$line"])
    try:
        child.sendline("hello-typed")
        child.expect("got:hello-typed")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_exec_it(daemon, docker, names):
    n = names("exectty")
    docker("run", "-d", "--name", n, "busybox", "sleep", "600", check=True)
    child = spawn(daemon, ["exec", "-it", n, "sh"], rows=40, cols=120)
    try:
        ready_shell(child)
        assert re.fullmatch(r"/dev/pts/\d+", run_cmd(child, "tty"))
        assert run_cmd(child, "stty size") == "40 120"
        child.setwinsize(20, 60)
        for _ in range(20):
            size = run_cmd(child, "stty size")
            if size == "20 60":
                break
        assert size == "20 60"
        assert run_cmd(child, "cat /proc/1/cmdline | tr '\\0' ' '") == "sleep 600"
        assert finish(child, 3) == 3
    finally:
        if child.isalive():
            child.terminate(force=True)
    # the container is unaffected
    assert docker("inspect", "-f", "{{.State.Running}}", n, check=True).stdout.strip() == "true"


@pytest.mark.parametrize("flags", [["-t"]])
def test_run_t_without_i_merges_stderr(daemon, docker, flags):
    r = docker("run", "--rm", *flags, "busybox", "sh", "-c", "echo out; echo err >&2")
    assert r.returncode == 0
    assert r.stdout.replace("\r", "") == "out\nerr\n"
