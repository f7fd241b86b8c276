"""`docker run`: output, exit codes, and the process options."""

import re


def test_run_rm_echo(docker, daemon):
    r = docker("run", "--rm", "busybox", "echo", "hi")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n"
    assert r.stderr == ""


def test_run_rm_leaves_no_container(docker, names):
    n = names("rm")
    docker("run", "--rm", "--name", n, "busybox", "true", check=True)
    assert docker("ps", "-a", "-q", "--filter", f"name=^{n}$").stdout.strip() == ""


def test_exit_code_passthrough(docker):
    r = docker("run", "--rm", "busybox", "sh", "-c", "exit 3")
    assert r.returncode == 3


def test_stderr_is_separate(docker):
    r = docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2")
    assert r.stdout == "out\n"
    assert r.stderr == "err\n"


def test_unknown_image_is_125(docker):
    r = docker("run", "--rm", "no-such-image-xyz:nope", "true")
    assert r.returncode == 125, (r.stdout, r.stderr)
    assert "no-such-image-xyz" in r.stderr


def test_missing_command_is_127(docker):
    r = docker("run", "--rm", "busybox", "no-such-command-xyz")
    assert r.returncode == 127, (r.stdout, r.stderr)
    assert "no-such-command-xyz" in r.stderr


def test_not_executable_is_126(docker):
    r = docker("run", "--rm", "busybox", "/notexec.sh")
    assert r.returncode == 126, (r.stdout, r.stderr)
    assert "should-not-run" not in r.stdout
    assert "permission denied" in r.stderr.lower() or "not executable" in r.stderr.lower()


def test_stdin_pipe(docker):
    r = docker("run", "--rm", "-i", "busybox", "cat", input="x\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "x\n"


def test_stdin_pipe_large_and_wc(docker):
    data = "".join(f"line {i}\n" for i in range(5000))
    r = docker("run", "--rm", "-i", "busybox", "wc", "-l", input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "5000"


def test_env_and_env_file(docker, daemon):
    env_file = daemon.tmp / "envfile"
    env_file.write_text("# comment\nFROM_FILE=yes\nSPACED=a b\n")
    r = docker("run", "--rm", "-e", "FOO=bar", "--env-file", str(env_file), "busybox",
               "sh", "-c", 'echo "$FOO|$FROM_FILE|$SPACED|$PATH"', check=True)
    foo, ff, spaced, path = r.stdout.strip().split("|")
    assert (foo, ff, spaced) == ("bar", "yes", "a b")
    assert "/bin" in path


def test_workdir(docker):
    assert docker("run", "--rm", "-w", "/tmp", "busybox", "pwd", check=True).stdout == "/tmp\n"
    # a missing workdir is created, as Docker does
    assert docker("run", "--rm", "-w", "/new/dir", "busybox", "pwd", check=True).stdout == "/new/dir\n"


def test_user(docker):
    assert docker("run", "--rm", "-u", "app", "busybox", "id", "-u", check=True).stdout.strip() == "1000"
    r = docker("run", "--rm", "-u", "1000:1000", "busybox", "sh", "-c", "id -u; id -g", check=True)
    assert r.stdout.split() == ["1000", "1000"]
    assert docker("run", "--rm", "-u", "nobody", "busybox", "id", "-un", check=True).stdout.strip() == "nobody"
    # HOME follows the user
    assert docker("run", "--rm", "-u", "app", "busybox", "sh", "-c", "echo $HOME", check=True).stdout.strip() == "/home/app"
    # supplementary groups from /etc/group
    assert "10" in docker("run", "--rm", "-u", "app", "busybox", "id", "-G", check=True).stdout.split()


def test_unknown_user_fails(docker):
    r = docker("run", "--rm", "-u", "no-such-user", "busybox", "true")
    assert r.returncode != 0
    assert "no-such-user" in r.stderr


def test_entrypoint(docker):
    r = docker("run", "--rm", "--entrypoint", "echo", "busybox", "hello", "world", check=True)
    assert r.stdout == "hello world\n"


def test_hostname(docker):
    assert docker("run", "--rm", "--hostname", "myhost", "busybox", "hostname", check=True).stdout == "myhost\n"
    r = docker("run", "--rm", "--hostname", "myhost", "busybox", "cat", "/etc/hostname", check=True)
    assert r.stdout.strip() == "myhost"


def test_default_hostname_is_short_id(docker, names):
    n = names("hn")
    cid = docker("run", "-d", "--name", n, "busybox", "sleep", "600", check=True).stdout.strip()
    hn = docker("exec", n, "hostname", check=True).stdout.strip()
    assert hn == cid[:12]


def test_labels(docker, daemon, names):
    n = names("lbl")
    docker("run", "-d", "--name", n, "-l", "tier=web", "--label", "team=x", "busybox", "sleep", "600", check=True)
    labels = daemon.inspect(n)["Config"]["Labels"]
    assert labels["tier"] == "web" and labels["team"] == "x"
    r = docker("ps", "--filter", "label=tier=web", "--format", "{{.Names}}", check=True)
    assert n in r.stdout.split()
    r = docker("ps", "--filter", "label=tier=db", "--format", "{{.Names}}", check=True)
    assert n not in r.stdout.split()


def test_read_only_rootfs(docker):
    r = docker("run", "--rm", "--read-only", "busybox", "touch", "/x")
    assert r.returncode != 0
    assert "Read-only file system" in r.stderr
    # --tmpfs gives a writable place on a read-only rootfs
    r = docker("run", "--rm", "--read-only", "--tmpfs", "/scratch", "busybox",
               "sh", "-c", "echo ok > /scratch/f && cat /scratch/f", check=True)
    assert r.stdout == "ok\n"


def test_tmpfs(docker):
    r = docker("run", "--rm", "--tmpfs", "/scratch:size=8m", "busybox", "sh", "-c",
               "grep ' /scratch ' /proc/mounts; df -k /scratch | tail -1", check=True)
    mounts_line, df_line = r.stdout.strip().splitlines()
    assert mounts_line.split()[2] == "tmpfs"
    assert int(df_line.split()[1]) == 8192


def test_init_makes_pid1_an_init(docker):
    no_init = docker("run", "--rm", "busybox", "sh", "-c", "echo $$", check=True).stdout.strip()
    assert no_init == "1"
    with_init = docker("run", "--rm", "--init", "busybox", "sh", "-c", "echo $$; cat /proc/1/comm", check=True)
    pid, comm1 = with_init.stdout.split()
    assert pid != "1"
    assert comm1 != "sh"


def test_init_forwards_signals_and_exit_code(docker, names):
    n = names("init")
    docker("run", "-d", "--init", "--name", n, "busybox", "sh", "-c",
           "trap 'exit 42' TERM; while true; do sleep 0.1; done", check=True)
    docker("stop", "-t", "10", n, check=True)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", n, check=True).stdout.strip() == "42"


def test_image_marker_and_default_env(docker):
    r = docker("run", "--rm", "busybox", "sh", "-c", "cat /etc/shibafu-test-image; echo $HOSTNAME; env", check=True)
    lines = r.stdout.splitlines()
    assert lines[0] == "shibafu-test-image"
    assert re.fullmatch(r"[0-9a-f]{12}", lines[1])
    assert any(line.startswith("PATH=") for line in lines)


def test_create_then_start_attach(docker, names):
    n = names("cs")
    r = docker("create", "--name", n, "busybox", "sh", "-c", "echo created-then-started; exit 5", check=True)
    assert len(r.stdout.strip()) == 64
    assert docker("inspect", "-f", "{{.State.Status}}", n, check=True).stdout.strip() == "created"
    r = docker("start", "-a", n)
    assert r.returncode == 5
    assert r.stdout == "created-then-started\n"
    assert docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", n, check=True).stdout.split() == ["exited", "5"]
