"""What every bad-input case asserts: a non-zero exit, one line on stderr that says what is wrong, no traceback,
and (by the caller) what is on disk afterwards. Shared by the tests/test_bad_inputs_*.py files."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# A fresh launcher that runs the command and writes the peak RSS (KiB) of its own children (only the command) to
# argv[1]. Neither the test process's RUSAGE_CHILDREN nor wait4 on a child forked from it will do: both count the
# pages the child shared with the (large) test process before its exec.
_PEAK = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
         "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(code)")


def _environment(env=None) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **(env or {})}


def run(package: str, *args, cwd=None, timeout=180, env=None, fresh=False) -> subprocess.CompletedProcess:
    """`python -m package args...`, with this checkout's code first on the path. By default the CLI's `main(argv)` runs
    in this process with stdout and stderr captured (a fresh interpreter costs 3-7 s of CPU importing torch, and the
    suite spawns dozens); an exception escaping `main` is printed as the traceback a user would see. `fresh=True`
    spawns a real subprocess, for what only a process shows: the interpreter's own exit, signals, memory."""
    if fresh:
        return subprocess.run([sys.executable, "-m", package, *map(str, args)], capture_output=True, text=True,
                              cwd=cwd, timeout=timeout, env=_environment(env))
    return _call_main(package, [str(a) for a in args], cwd=cwd, timeout=timeout, env=env)


def _call_main(package: str, argv: list[str], *, cwd, timeout, env) -> subprocess.CompletedProcess:
    import contextlib
    import importlib
    import io
    import signal
    import traceback

    main = importlib.import_module(package if package == "demo" else f"{package}.__main__").main
    out, err = io.StringIO(), io.StringIO()

    def expire(signum, frame):
        raise subprocess.TimeoutExpired([package, *argv], timeout)

    saved_env, previous = dict(os.environ), signal.signal(signal.SIGALRM, expire)
    os.environ.update(env or {})
    signal.alarm(int(timeout))
    try:
        with contextlib.chdir(cwd or os.getcwd()), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as stop:  # argparse's usage errors, sys.exit in a command
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                if isinstance(stop.code, str):
                    print(stop.code, file=sys.stderr)
            except subprocess.TimeoutExpired:
                raise
            except BaseException:  # what the interpreter would print before exiting 1
                traceback.print_exc()
                code = 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess([package, *argv], code or 0, out.getvalue(), err.getvalue())


def run_measured(package: str, *args, timeout=300) -> tuple[subprocess.CompletedProcess, int]:
    """`run`, and the command's peak resident memory in KiB."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        peak = Path(folder) / "peak"
        done = subprocess.run([sys.executable, "-c", _PEAK, str(peak), sys.executable, "-m", package,
                               *map(str, args)], capture_output=True, text=True, timeout=timeout, env=_environment())
        return done, int(peak.read_text())


def assert_refused(done: subprocess.CompletedProcess, *words: str, code: int | None = None) -> str:
    """The command failed cleanly: non-zero exit (or `code`), no traceback, one stderr line containing each of
    `words` (case-insensitive). Returns that line."""
    err = done.stderr.strip()
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr[-3000:]
    assert done.returncode != 0 if code is None else done.returncode == code, (done.returncode, err)
    lines = [line for line in err.splitlines() if line.strip()]
    # progress bars (tqdm) may have drawn on stderr before the error: the error is the last line
    assert lines, "no error message on stderr"
    last = lines[-1]
    assert all(not line.startswith(("  File ", "During handling")) for line in lines), err
    for word in words:
        assert word.lower() in last.lower(), (word, last)
    return last


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> sha256): compare before and after to prove nothing was touched."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
