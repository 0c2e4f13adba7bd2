"""alpaca_lora.sandbox: generated code runs in a separate, confined process; any misbehaviour is a failure.

The hostile-code corpus (tests/hostile_code.py) runs with the audit hook alone and, where bubblewrap works,
with the mount namespace as well; after every case nothing outside the working folder has changed and nothing
secret came back. The namespace layer is also tested without the audit hook.
"""

from __future__ import annotations

import dis
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import types
import uuid
from importlib.util import find_spec
from pathlib import Path

import pytest

from alpaca_lora import sandbox
from alpaca_lora.sandbox import MESSAGE_LIMIT, OUTPUT_LIMIT, run_tests
from hostile_code import CORPUS, Case

FACTORIAL = "def factorial(n):\n    return 1 if n == 0 else n * factorial(n - 1)\n"
TESTS = ["assert factorial(0) == 1", "assert factorial(5) == 120"]
ISOLATIONS = ["audit-hook", "namespace"]


def require(isolation: str) -> None:
    """The namespace layer is tested wherever bubblewrap is installed (make test installs it as root)."""
    if isolation == "namespace" and not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed: the mount-namespace layer cannot be tested here")


@pytest.fixture(params=ISOLATIONS)
def isolation(request) -> str:
    require(request.param)
    return request.param


# ---- ordinary code --------------------------------------------------------------------------------------


def test_correct_code_passes_and_runs_in_another_process(isolation):
    code = FACTORIAL + "import os\nPID = os.getpid()\nprint('noise')\n"
    result = run_tests(code, TESTS + [f"assert PID != {os.getpid()}"], timeout_s=5, isolation=isolation)
    assert result["passed"] and result["status"] == "passed" and result["kind"] is None
    assert [t["passed"] for t in result["tests"]] == [True, True, True]
    assert result["output"] == "noise\n", "the code's prints are captured, not mixed into the result"


def test_a_failing_assert_fails_only_that_test(isolation):
    code = "def factorial(n):\n    return n\n"
    tests = ["assert factorial(5) == 5", "assert factorial(0) == 1, 'factorial(0)'"]
    result = run_tests(code, tests, timeout_s=5, isolation=isolation)
    assert not result["passed"] and result["status"] == "failed"
    assert [t["passed"] for t in result["tests"]] == [True, False]
    failed = result["tests"][1]
    assert failed["kind"] == "AssertionError" and failed["message"] == "factorial(0)"
    assert failed["error"] == "AssertionError: factorial(0)" == result["detail"]


def test_code_that_does_not_load_fails_every_test():
    result = run_tests("def factorial(n) return 1", TESTS, timeout_s=5)
    assert result["status"] == "error" and result["kind"] == "SyntaxError"
    assert result["detail"].startswith("SyntaxError: ") and "line 1" in result["detail"]
    assert all(t["error"] == "not run: the code failed to load" for t in result["tests"])


def test_the_wall_clock_limit_is_enforced_and_reported(isolation):
    """A run that sleeps is stopped by the parent and says so (how long that takes is for benchmarks)."""
    result = run_tests("import time\ntime.sleep(3600)\n", TESTS, timeout_s=1, isolation=isolation)
    assert result["status"] == "timeout" and result["kind"] == "timeout"
    assert result["detail"] == "timeout (wall-clock limit)"
    assert [t["error"] for t in result["tests"]] == ["not run: timeout (wall-clock limit)"] * 2
    assert result["isolation"]["timeout_s"] == 1


def test_an_infinite_loop_is_stopped_by_the_cpu_limit(isolation):
    result = run_tests(
        "def factorial(n):\n    while True:\n        pass\n", TESTS, timeout_s=1, isolation=isolation
    )
    assert result["status"] == "timeout" and not result["passed"]
    assert all(not t["passed"] and t["kind"] == "not run" for t in result["tests"])


def test_a_huge_allocation_fails_without_taking_the_memory():
    # 1 GiB would fit in this machine's memory: only the sandbox's 256 MB limit stops it.
    code = FACTORIAL + "def huge():\n    return bytearray(1024**3)\n"
    tests = ["assert factorial(5) == 120", "assert len(huge()) > 0"]
    result = run_tests(code, tests, timeout_s=10, memory_mb=256)
    assert not result["passed"]
    assert result["tests"][0]["passed"] and result["tests"][1]["kind"] == "MemoryError"


def test_its_own_folder_is_usable(isolation, tmp_path):
    code = (
        "import os, pathlib, shutil, tempfile\n"
        "def work():\n"
        "    os.makedirs('a/b')\n"
        "    pathlib.Path('a/b/c.txt').write_text('c')\n"
        "    open('b.txt', 'w').write('ok')\n"
        "    os.symlink('../b.txt', 'a/link')  # relative to the link's folder: inside\n"
        "    assert open('a/link').read() == 'ok'\n"
        "    os.rename('b.txt', 'a/renamed.txt')\n"
        "    os.chdir(os.getcwd())\n"
        "    with tempfile.TemporaryDirectory() as scratch:\n"
        "        open(os.path.join(scratch, 'x'), 'w').write('x')\n"
        "    shutil.rmtree('a')\n"
        "    return sorted(os.listdir('.'))\n"
    )
    result = run_tests(code, ["assert work() == []"], timeout_s=5, isolation=isolation)
    assert result["passed"], result["tests"]


def test_the_standard_library_and_the_interpreters_files_can_be_read(isolation):
    code = (
        "import collections, dataclasses, datetime, decimal, fractions, functools, hashlib, heapq\n"
        "import itertools, json, logging, math, random, re, statistics, string, tarfile, typing, os\n"
        "def read():\n"
        "    open(os.devnull, 'w').write('x')\n"
        "    return len(open('/dev/urandom', 'rb').read(4)) + len(open(json.__file__).read()[:1])\n"
    )
    result = run_tests(code, ["assert read() == 5"], timeout_s=10, isolation=isolation)
    assert result["passed"], result["tests"]


def test_the_standard_library_that_looks_at_frames_still_works(isolation):
    """namedtuple, typing, enum, logging and traceback read frames; the sandbox lets them."""
    code = (
        "import collections, enum, logging, traceback, typing\n"
        "Point = collections.namedtuple('Point', 'x y')\n"
        "T = typing.TypeVar('T')\n"
        "Color = enum.Enum('Color', 'RED GREEN')\n"
        "logging.getLogger('answer').warning('a warning')\n"
        "def formatted():\n"
        "    try:\n        1 / 0\n    except ZeroDivisionError:\n        return traceback.format_exc()\n"
    )
    tests = [
        "assert Point(1, 2).y == 2 and Color.RED.value == 1",
        "assert 'ZeroDivisionError' in formatted()",
    ]
    result = run_tests(code, tests, isolation=isolation)
    assert result["passed"], result["tests"]
    assert "a warning" in result["output"]


def test_installed_packages_are_importable_only_when_allowed(isolation):
    refused = run_tests("import yaml\n", ["assert yaml.safe_load('a: 1') == {'a': 1}"], isolation=isolation)
    assert refused["status"] == "error" and "not in the standard library" in refused["detail"]
    allowed = run_tests(
        "import yaml\n",
        ["assert yaml.safe_load('a: 1') == {'a': 1}"],
        isolation=isolation,
        packages=("yaml",),
    )
    assert allowed["passed"], allowed["detail"]
    assert allowed["isolation"]["packages"] == ["yaml"]


def test_the_environment_is_minimal(isolation, monkeypatch):
    monkeypatch.setenv("SANDBOX_TEST_SECRET", "do-not-pass-on")
    result = run_tests(
        "import os\nNAMES = sorted(os.environ)\n",
        ["assert NAMES == ['HOME', 'LC_ALL', 'PATH', 'TMPDIR'], NAMES"],
        isolation=isolation,
    )
    assert result["passed"], result["detail"]


def test_input_and_exit_in_the_code_are_failures_not_hangs():
    assert run_tests("n = int(input())\n", TESTS, timeout_s=5)["status"] == "error"
    assert run_tests("import sys\nsys.exit(0)\n", TESTS, timeout_s=5)["status"] == "error"


def test_the_working_directory_is_thrown_away():
    code = "import os\nWHERE = os.getcwd()\nopen('left.txt', 'w').write('x')\n"
    result = run_tests(code, ["assert False, WHERE"], timeout_s=5, isolation="audit-hook")
    folder = result["tests"][0]["message"]
    assert "sandbox-" in folder and not os.path.exists(folder)


def test_opening_a_network_socket_fails_even_to_a_listening_local_server(isolation):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        code = (
            "import socket\n"
            f"def connect():\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'x')\n"
            "def raw():\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
            "def http():\n    import urllib.request\n    urllib.request.urlopen('http://127.0.0.1:%d/' % "
            f"{port}, timeout=2)\n"
        )
        result = run_tests(code, ["connect()", "raw()", "http()"], timeout_s=5, isolation=isolation)
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
    assert not result["passed"]
    # urllib wraps the refusal in a URLError; the message is the sandbox's.
    assert all(not t["passed"] and "sandbox: socket." in t["message"] for t in result["tests"])


# ---- the hostile-code corpus ----------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path) -> dict[str, Path]:
    """A folder outside the sandbox: a secret, a file to keep, an empty folder; and a readable folder."""
    folder = tmp_path / "outside"
    (folder / "empty").mkdir(parents=True)
    secret = folder / "secret.txt"
    secret.write_text(f"TOP-SECRET-{uuid.uuid4().hex}\n")
    keep = folder / "keep.txt"
    keep.write_text("keep")
    try:
        os.setxattr(keep, "user.kept", b"1")
    except OSError:
        pass  # a file system without user xattrs: os.removexattr then fails either way
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    (readonly / "data.txt").write_text("read-only data")
    (readonly / "link-to-secret").symlink_to(secret)
    (tmp_path / "readonly-secret.txt").write_text(secret.read_text())
    return {
        "outside": folder,
        "secret": secret,
        "keep": keep,
        "empty": folder / "empty",
        "readonly": readonly,
    }


def snapshot(folder: Path) -> dict:
    """Everything about a folder's entries that the code might change."""
    state = {}
    for path in sorted([folder, *folder.rglob("*")]):
        info = path.lstat()
        content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        try:
            attributes = sorted(os.listxattr(path, follow_symlinks=False))
        except OSError:
            attributes = None
        state[str(path)] = (
            info.st_mode,
            info.st_uid,
            info.st_gid,
            info.st_size,
            info.st_mtime_ns,
            content,
            attributes,
        )
    return state


def secrets_to_hide(outside: dict[str, Path]) -> list[str]:
    hidden = [outside["secret"].read_text().strip()]
    try:
        shadow = Path("/etc/shadow").read_text().splitlines()
    except OSError:
        shadow = []
    return hidden + [line for line in shadow[:3] if len(line) > 8]


def case_id(case: Case) -> str:
    return case.name


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("case", CORPUS, ids=case_id)
def test_hostile_code_gets_the_outcome_it_must_and_changes_nothing_outside(case: Case, isolation, outside):
    require(isolation)
    if isolation not in case.layers:
        pytest.skip(f"this case is about the {', '.join(case.layers)} layer")
    if case.needs and find_spec(case.needs) is None:
        pytest.skip(f"{case.needs} is not part of this Python")
    fields = {name: repr(str(path)) for name, path in outside.items()}
    fields["marker"] = repr(str(outside["outside"] / "ran"))
    shm = f"/sandbox-test-{uuid.uuid4().hex[:12]}"
    fields["shm"] = repr(shm)
    before = snapshot(outside["outside"]), snapshot(outside["readonly"])
    result = run_tests(
        case.code,
        [case.test.format(**fields)],
        case.timeout_s,
        case.memory_mb,
        isolation=isolation,
        readable=(str(outside["readonly"]),),
    )
    outcome = result["tests"][0]
    if case.passes:
        assert outcome["passed"], outcome
    elif isinstance(case.expect, str):
        assert result["status"] in case.expect.removeprefix("status:").split("|"), result
        assert not outcome["passed"] and outcome["kind"] == "not run"
    else:
        assert not outcome["passed"] and outcome["kind"] in case.expect, outcome
        assert case.message in outcome["message"], outcome
    assert (snapshot(outside["outside"]), snapshot(outside["readonly"])) == before, (
        "something outside changed"
    )
    stored = json.dumps(result, ensure_ascii=False)
    stored.encode("utf-8")  # valid UTF-8, whatever the code raised
    assert not any(secret in stored for secret in secrets_to_hide(outside))
    assert len(outcome["message"]) <= MESSAGE_LIMIT and len(outcome.get("full_error", "")) <= OUTPUT_LIMIT
    for sibling in re.findall(r"'(/[^']*-x\.txt)'", stored):
        assert not os.path.exists(sibling), f"{sibling} was written"
    for made in (f"/dev/shm{shm}", f"/dev/shm/sem.{shm[1:]}"):
        assert not os.path.exists(made), f"{made} was made"


def test_the_corpus_covers_what_the_issue_lists():
    names = " ".join(case.name for case in CORPUS)
    for subject in (
        "open",
        "io.FileIO",
        "os.open",
        "pathlib",
        "mmap",
        "/proc/self/root",
        "symlink",
        "fork",
        "exec",
        "socket",
        "memory",
        "CPU",
        "files",
        "threads",
        "SIGXCPU",
        "audit hook",
        "parent",
    ):
        assert subject in names, subject
    assert len(CORPUS) >= 100


def test_patched_builtins_cannot_make_a_failing_test_pass(isolation):
    """Replacing exec, compile, the exception base or the harness's own functions changes nothing."""
    code = (
        "import builtins, sys\n"
        "main = sys.modules['__main__']\n"
        "builtins.exec = lambda *a, **k: None\n"
        "builtins.compile = lambda *a, **k: None\n"
        "builtins.BaseException = builtins.range = builtins.isinstance = object\n"
        "main.harness = main.confine = main.disarm = main.OUTPUT_LIMIT = None\n"
    )
    result = run_tests(code, ["assert False", "assert 1 == 2"], timeout_s=5, isolation=isolation)
    assert [t["kind"] for t in result["tests"]] == ["AssertionError", "AssertionError"]
    assert result["status"] == "failed"


def test_the_hook_and_the_harness_read_no_global_after_the_code_runs():
    """Whatever they call is bound when they are made: a LOAD_GLOBAL could be redirected by the code."""

    def nested(code: types.CodeType):
        for constant in code.co_consts:
            if isinstance(constant, types.CodeType):
                yield constant
                yield from nested(constant)

    for factory in (sandbox.confine, sandbox.harness):
        for code in nested(factory.__code__):
            names = [i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")]
            assert not names, f"{factory.__name__}.{code.co_name} reads {names} at call time"


# ---- the layers -----------------------------------------------------------------------------------------


def test_audit_hook_alone_has_no_namespace():
    layers = sandbox.isolation_layers("audit-hook")
    assert layers["layers"] == ["process limits", "audit hook"]
    assert not layers["mount_namespace"] and not layers["network_namespace"]
    result = run_tests(
        "import os\nSEEN = os.path.exists('/etc/passwd')\n", ["assert SEEN"], isolation="audit-hook"
    )
    assert result["passed"], "without the namespace the host's files exist (their metadata is not hidden)"


def test_the_mount_namespace_is_used_when_available():
    require("namespace")
    layers = sandbox.isolation_layers("auto")
    assert layers["mount_namespace"], layers["namespace_unavailable"]
    assert layers["layers"][-1] == "mount, pid and network namespaces (bubblewrap)"
    result = run_tests(
        "import os\nSEEN = os.path.exists('/etc/passwd')\n", ["assert not SEEN"], isolation="namespace"
    )
    assert result["passed"] and result["isolation"]["mount_namespace"]


def test_the_mount_namespace_alone_hides_the_host(tmp_path):
    """bubblewrap without the audit hook: the secret, /etc, the parent and the network are out of reach."""
    require("namespace")
    extra, reason = sandbox.namespace_support()
    assert extra is not None, reason
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    probe = f"""
import json, os, socket, sys
seen = {{}}
def attempt(name, action):
    try:
        seen[name] = repr(action())
    except OSError as error:
        seen[name] = type(error).__name__
attempt("secret", lambda: open({str(secret)!r}).read())
attempt("shadow", lambda: open("/etc/shadow").read())
attempt("write into the interpreter", lambda: open(sys.prefix + "/sandbox-probe", "w"))
attempt("network", lambda: socket.create_connection(("1.1.1.1", 53), timeout=2))
seen["root"] = sorted(os.listdir("/"))
seen["parent"] = os.getppid()
seen["size"] = os.statvfs(".").f_blocks * os.statvfs(".").f_frsize
print(json.dumps(seen))
"""
    workdir = "/tmp/sandbox-namespace-test"
    command = [
        *sandbox.bubblewrap_prefix(shutil.which("bwrap"), workdir, (), extra),
        sys.executable,
        "-I",
        "-c",
    ]
    seen = json.loads(subprocess.run([*command, probe], capture_output=True, text=True, check=True).stdout)
    assert seen["secret"] == seen["shadow"] == "FileNotFoundError"
    assert seen["write into the interpreter"] == "OSError"  # read-only file system
    assert seen["network"] == "OSError"  # no interfaces: unreachable
    assert "etc" not in seen["root"] and "home" not in seen["root"] and "proc" not in seen["root"]
    assert seen["parent"] == 1, "its own pid namespace: the caller is not visible"
    assert seen["size"] == sandbox.WORKDIR_MB << 20
    assert not os.path.exists(sys.prefix + "/sandbox-probe")


def test_namespace_isolation_fails_clearly_where_it_is_unavailable(monkeypatch):
    monkeypatch.setattr(sandbox, "namespace_support", lambda: (None, "bubblewrap (bwrap) is not installed"))
    with pytest.raises(RuntimeError, match="mount namespace is not available: bubblewrap"):
        run_tests(FACTORIAL, TESTS, isolation="namespace")
    fallback = run_tests(FACTORIAL, TESTS, isolation="auto")
    assert fallback["passed"] and not fallback["isolation"]["mount_namespace"]
    assert fallback["isolation"]["namespace_unavailable"] == "bubblewrap (bwrap) is not installed"
    with pytest.raises(ValueError, match="isolation must be one of"):
        run_tests(FACTORIAL, TESTS, isolation="container")


# ---- command line ---------------------------------------------------------------------------------------


def sandbox_command(*args: str) -> subprocess.CompletedProcess:
    """`python -m alpaca_lora.sandbox ...`, the module's command line."""
    command = [sys.executable, "-m", "alpaca_lora.sandbox", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True)


def test_command_line(tmp_path):
    code = tmp_path / "answer.py"
    code.write_text(FACTORIAL)
    passed = sandbox_command("--code", code, "--test", TESTS[1], "--timeout-s", "5")
    assert passed.returncode == 0 and json.loads(passed.stdout)["passed"]
    failed = sandbox_command("--code", code, "--test", "assert factorial(3) == 7")
    assert failed.returncode == 1 and json.loads(failed.stdout)["status"] == "failed"
    audit = sandbox_command("--code", code, "--test", TESTS[0], "--isolation", "audit-hook")
    assert json.loads(audit.stdout)["isolation"]["layers"] == ["process limits", "audit hook"]
