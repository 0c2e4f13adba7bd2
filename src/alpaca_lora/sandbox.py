#!/usr/bin/env python
"""Run untrusted Python code (a model's answer) against assert-statement tests, in a separate process.

The code never runs in the calling process. Each run gets:
  - a child Python process (`python -I`: no user site, no PYTHON* variables) with a minimal environment;
  - a throwaway working directory (also HOME and TMPDIR), deleted afterwards;
  - resource limits set in the child before the code runs: CPU seconds (RLIMIT_CPU), address space
    (RLIMIT_AS), file size (RLIMIT_FSIZE), open files, no core dumps; plus a wall-clock limit enforced by
    the parent, which kills the child's whole process group;
  - an audit hook (PEP 578) installed before the code runs that refuses, with PermissionError: sockets and
    name lookups, new processes (subprocess, os.system, exec, spawn, fork), ctypes, raising resource
    limits, adding audit hooks, gc object walks, and any write, create, delete, rename or chmod of a path
    outside the working directory (symlinks are resolved first);
  - where `unshare -rn` works (Linux user + network namespaces), a network namespace with no interfaces up,
    so that even code that slipped past the audit hook has no network.

Every failure — a failing assert, an exception, a timeout, running out of memory, a refused operation, a
crash — is reported as a failed test, never raised. This guards against the accidents of generated code
(infinite loops, huge allocations, stray file writes, network calls); it is not a boundary against a
determined attacker in the same interpreter: run untrusted evaluations in a container for that.

Example:
  python -m alpaca_lora.sandbox --code answer.py --test "assert factorial(5) == 120" --timeout-s 5
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 512
FILE_SIZE_LIMIT = 16 * 1024 * 1024
OUTPUT_LIMIT = 2000
# Killed by a signal: what the child ran into.
SIGNAL_REASONS = {
    signal.SIGXCPU: "timeout (CPU time limit)",
    signal.SIGKILL: "killed (CPU time or memory limit)",
    signal.SIGXFSZ: "file size limit",
    signal.SIGSEGV: "crashed (segmentation fault)",
}


# ---- parent side -----------------------------------------------------------------------------------------


@functools.cache
def network_namespace_prefix() -> tuple[str, ...]:
    """`unshare -rn` (new user + network namespace) when this machine allows it, else nothing."""
    unshare = shutil.which("unshare")
    if not unshare:
        return ()
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=30)
    return (unshare, "-rn") if probe.returncode == 0 else ()


def run_tests(
    code: str,
    tests: list[str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> dict:
    """Run `code`, then each test, in a sandboxed child; return what passed and why the rest did not.

    The result: passed (every test passed), status (passed, failed, error: the code itself failed,
    timeout, or killed), detail, tests [{test, passed, error}], and the isolation that was in force.
    """
    nonce = secrets.token_hex(16)
    job = {"code": code, "tests": tests, "nonce": nonce, "timeout_s": timeout_s, "memory_mb": memory_mb}
    prefix = network_namespace_prefix()
    isolation = {
        "process": True,
        "network_namespace": bool(prefix),
        "audit_hook": True,
        "timeout_s": timeout_s,
        "memory_mb": memory_mb,
    }
    with tempfile.TemporaryDirectory(prefix="sandbox-") as workdir:
        environment = {"PATH": os.defpath, "HOME": workdir, "TMPDIR": workdir, "LC_ALL": "C.UTF-8"}
        process = subprocess.Popen(
            [*prefix, sys.executable, "-I", str(Path(__file__).resolve()), "--child"],
            cwd=workdir,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        timed_out = False
        try:
            stdout, stderr = process.communicate(json.dumps(job).encode(), timeout=timeout_s + 2)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
    return summarize(nonce, tests, stdout, stderr, process.returncode, timed_out, isolation)


def summarize(
    nonce: str,
    tests: list[str],
    stdout: bytes,
    stderr: bytes,
    returncode: int,
    timed_out: bool,
    isolation: dict,
) -> dict:
    """Turn the child's report lines and exit status into one result; tests it never reached fail."""
    events = []
    for line in stdout.decode("utf-8", "replace").splitlines():
        if line.startswith(nonce + " "):
            events.append(json.loads(line[len(nonce) + 1 :]))
    loaded = next((e for e in events if e["kind"] == "load"), None)
    results = {e["index"]: e for e in events if e["kind"] == "test"}
    if timed_out:
        reason = "timeout (wall-clock limit)"
    elif returncode < 0:
        reason = SIGNAL_REASONS.get(-returncode, f"killed by signal {-returncode}")
    elif loaded is None or len(results) < len(tests):
        tail = stderr.decode("utf-8", "replace")[-OUTPUT_LIMIT:]
        reason = f"sandbox exited with status {returncode} before the end" + (f": {tail}" if tail else "")
    else:
        reason = None
    outcomes = []
    for index, test in enumerate(tests):
        if index in results:
            outcomes.append(
                {"test": test, "passed": results[index]["passed"], "error": results[index]["error"]}
            )
        elif loaded is not None and loaded["error"]:
            outcomes.append({"test": test, "passed": False, "error": "not run: the code failed to load"})
        else:
            outcomes.append({"test": test, "passed": False, "error": f"not run: {reason}"})
    if loaded is not None and loaded["error"]:
        status, detail = "error", loaded["error"]
    elif reason and (timed_out or "timeout" in reason):
        status, detail = "timeout", reason
    elif reason:
        status, detail = "killed", reason
    elif all(outcome["passed"] for outcome in outcomes):
        status, detail = "passed", ""
    else:
        status, detail = "failed", next(o["error"] for o in outcomes if not o["passed"])
    return {
        "passed": status == "passed" and bool(tests),
        "status": status,
        "detail": detail,
        "tests": outcomes,
        "output": (loaded or {}).get("output", ""),
        "isolation": isolation,
    }


# ---- child side: runs inside the sandbox process, standard library only -----------------------------------

BLOCKED_EVENT_PREFIXES = (
    "socket.",
    "subprocess.",
    "os.system",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "pty.",
    "ctypes.",
    "resource.setrlimit",
    "resource.prlimit",
    "sys.addaudithook",
    "gc.get_",
)
# Events whose path arguments must all lie inside the working directory.
MUTATING_PATH_EVENTS = {
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "os.chown",
    "os.chflags",
    "os.link",
    "os.symlink",
    "os.truncate",
    "os.utime",
    "os.setxattr",
    "os.removexattr",
    "shutil.rmtree",
    "shutil.copyfile",
    "shutil.copymode",
    "shutil.copystat",
    "shutil.move",
    "shutil.chown",
}


def set_limits(timeout_s: float, memory_mb: int) -> None:
    import resource

    cpu = max(1, int(timeout_s + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def confine(workdir: str):
    """The audit hook: refuse network, processes, ctypes, and writes outside `workdir`."""
    root = os.path.realpath(workdir)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

    def inside(path) -> bool:
        if isinstance(path, int):  # an already open file descriptor
            return True
        resolved = os.path.realpath(os.fsdecode(path))
        return resolved == root or resolved.startswith(root + os.sep)

    def is_path(value) -> bool:
        return isinstance(value, str | bytes | os.PathLike)

    def hook(event: str, args: tuple) -> None:
        if event.startswith(BLOCKED_EVENT_PREFIXES):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = (list(args) + [None, None])[:3]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags
            )
            if writes and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the working directory")
        elif event in MUTATING_PATH_EVENTS:
            for value in args:
                if is_path(value) and not inside(value):
                    raise PermissionError(f"sandbox: {event} on {value!r} outside the working directory")

    return hook


def child_main() -> None:
    import contextlib
    import io
    import traceback

    job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    sys.stdin = io.StringIO("")  # input() gets end of file, not the job
    nonce = job.pop("nonce")
    set_limits(job["timeout_s"], job["memory_mb"])

    def report(event: dict) -> None:
        os.write(1, f"{nonce} {json.dumps(event)}\n".encode())

    def error_text() -> str:
        kind, value, _ = sys.exc_info()
        return "".join(traceback.format_exception_only(kind, value)).strip()[-OUTPUT_LIMIT:]

    captured = io.StringIO()
    sys.addaudithook(confine(os.getcwd()))
    namespace = {"__name__": "__sandbox__"}
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        try:
            exec(compile(job["code"], "<answer>", "exec"), namespace)
            load_error = None
        except BaseException:  # noqa: BLE001 - anything the code does is its failure, reported
            load_error = error_text()
    report({"kind": "load", "error": load_error, "output": captured.getvalue()[-OUTPUT_LIMIT:]})
    if load_error:
        return
    for index, test in enumerate(job["tests"]):
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            try:
                exec(compile(test, f"<test {index}>", "exec"), namespace)
                error = None
            except BaseException:  # noqa: BLE001
                error = error_text() or "AssertionError"
        report({"kind": "test", "index": index, "passed": error is None, "error": error})


# ---- command line ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--code", required=True, help="Python file with the code under test")
    parser.add_argument("--test", action="append", default=[], help="assert statement (repeatable)")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="default: %(default)s")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB, help="default: %(default)s")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    code = Path(args.code).read_text(encoding="utf-8")
    result = run_tests(code, args.test, args.timeout_s, args.memory_mb)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child_main()
    else:
        main()
