"""alpaca_lora.sandbox: generated code runs in a separate, limited process; any misbehaviour is a failure."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from alpaca_lora.sandbox import run_tests

FACTORIAL = "def factorial(n):\n    return 1 if n == 0 else n * factorial(n - 1)\n"
TESTS = ["assert factorial(0) == 1", "assert factorial(5) == 120"]


def test_correct_code_passes_and_runs_in_another_process():
    code = FACTORIAL + "import os\nPID = os.getpid()\nprint('noise')\n"
    result = run_tests(code, TESTS + [f"assert PID != {os.getpid()}"], timeout_s=5)
    assert result["passed"] and result["status"] == "passed"
    assert [t["passed"] for t in result["tests"]] == [True, True, True]
    assert result["output"] == "noise\n", "the code's prints are captured, not mixed into the result"


def test_a_failing_assert_fails_only_that_test():
    code = "def factorial(n):\n    return n\n"
    result = run_tests(code, ["assert factorial(5) == 5", "assert factorial(0) == 1"], timeout_s=5)
    assert not result["passed"] and result["status"] == "failed"
    assert [t["passed"] for t in result["tests"]] == [True, False]
    assert "AssertionError" in result["tests"][1]["error"]


def test_code_that_does_not_load_fails_every_test():
    result = run_tests("def factorial(n) return 1", TESTS, timeout_s=5)
    assert result["status"] == "error" and "SyntaxError" in result["detail"]
    assert not any(t["passed"] for t in result["tests"])


def test_an_infinite_loop_is_stopped_and_fails():
    started = time.monotonic()
    result = run_tests("def factorial(n):\n    while True:\n        pass\n", TESTS, timeout_s=1)
    assert time.monotonic() - started < 30
    assert not result["passed"] and result["status"] == "timeout"
    assert all(not t["passed"] and "not run" in t["error"] for t in result["tests"])


def test_sleeping_forever_hits_the_wall_clock_limit():
    result = run_tests("import time\ntime.sleep(3600)\n", TESTS, timeout_s=1)
    assert result["status"] == "timeout" and "wall-clock" in result["detail"]


def test_a_huge_allocation_fails_without_taking_the_memory():
    # 1 GiB would fit in this machine's memory: only the sandbox's 256 MB limit stops it.
    code = FACTORIAL + "def huge():\n    return bytearray(1024**3)\n"
    tests = ["assert factorial(5) == 120", "assert len(huge()) > 0"]
    result = run_tests(code, tests, timeout_s=10, memory_mb=256)
    assert not result["passed"]
    assert result["tests"][0]["passed"] and "MemoryError" in result["tests"][1]["error"]


def test_writing_outside_the_working_directory_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    code = (
        FACTORIAL
        + f"def absolute():\n    open({str(target)!r}, 'w').write('x')\n"
        + "def relative():\n    open('../escaped.txt', 'a').write('x')\n"
        + "def inside():\n    open('ok.txt', 'w').write('x')\n    return open('ok.txt').read()\n"
        + "def remove():\n    import os\n    os.remove("
        + repr(str(tmp_path / "keep.txt"))
        + ")\n"
    )
    (tmp_path / "keep.txt").write_text("keep")
    tests = ["absolute()", "relative()", "assert inside() == 'x'", "remove()"]
    result = run_tests(code, tests, timeout_s=5)
    outcomes = {t["test"]: t for t in result["tests"]}
    assert not result["passed"]
    for test in ("absolute()", "relative()", "remove()"):
        assert not outcomes[test]["passed"] and "PermissionError" in outcomes[test]["error"]
    assert outcomes["assert inside() == 'x'"]["passed"], "its own folder is writable"
    assert not target.exists() and (tmp_path / "keep.txt").read_text() == "keep"


def test_opening_a_network_socket_fails_even_to_a_listening_local_server():
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
        result = run_tests(code, ["connect()", "raw()", "http()"], timeout_s=5)
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
    assert not result["passed"]
    # urllib wraps the refusal in a URLError; the message is the sandbox's.
    assert all(not t["passed"] and "sandbox: socket." in t["error"] for t in result["tests"])


def test_starting_processes_and_ctypes_are_refused():
    code = "def run():\n    import subprocess\n    subprocess.run(['true'])\n"
    result = run_tests(code, ["run()", "import os; os.system('true')", "import ctypes"], timeout_s=5)
    assert all(not t["passed"] and "PermissionError" in t["error"] for t in result["tests"])


def test_the_working_directory_is_thrown_away():
    code = "import os\nWHERE = os.getcwd()\nopen('left.txt', 'w').write('x')\n"
    result = run_tests(code, ["assert False, WHERE"], timeout_s=5)
    folder = result["tests"][0]["error"].split("AssertionError: ", 1)[1]
    assert "sandbox-" in folder and not os.path.exists(folder)


def test_input_and_exit_in_the_code_are_failures_not_hangs():
    assert run_tests("n = int(input())\n", TESTS, timeout_s=5)["status"] == "error"
    assert run_tests("import sys\nsys.exit(0)\n", TESTS, timeout_s=5)["status"] == "error"


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
