#!/usr/bin/env python
"""Run untrusted Python code (a model's answer) against assert-statement tests, in a confined child process.

The code never runs in the calling process. It runs in a child Python behind these layers (docs/sandbox.md
says what each one guarantees and what it does not):

  process limits   `python -I -B` with a minimal environment and a throwaway working folder (also HOME and
                   TMPDIR); CPU time, address space, file size, open files and core dumps limited; a
                   wall-clock limit, enforced by the parent, kills the child's process group.
  audit hook       (PEP 578) installed before the code runs. It refuses new processes, sockets, ctypes,
                   signals to other processes, raising limits, the system log, and what could rebind the
                   hook's own variables (gc referrers, trace and profile functions); reading anything but
                   the working folder, the interpreter's import path (standard library and installed
                   packages) and the paths given as `readable`; writing, creating,
                   deleting, renaming, linking or changing anything outside the working folder; leaving the
                   working folder (chdir), opening a folder outside it, more than MAX_CREATIONS creations;
                   importing anything but the standard library and the packages given as `packages`, and
                   the C modules that do file or process work CPython does not audit (sqlite3, pwd, spwd,
                   ...). Paths are resolved (symbolic links, `..`, /proc/self/root) with functions bound
                   when the hook is installed, so that the code cannot monkeypatch the check away. Functions
                   CPython runs without an audit event (mknod, mkfifo, pidfd_send_signal, setpriority and
                   sched_* on other processes, _posixsubprocess.fork_exec) are removed before the code runs.
  mount namespace  where bubblewrap (`bwrap`) is installed and the kernel allows user namespaces: the child
                   sees only /usr, the interpreter and its import path, the `readable` paths (all read-only),
                   a minimal /dev and its working folder (a WORKDIR_MB MB tmpfs), in its own user, pid,
                   network (no interfaces), IPC and UTS namespaces, with every capability dropped.
  network namespace  without bubblewrap, where `unshare -rn` works: no network.

Every failure (a failing assert, an exception, a timeout, running out of memory, a refused operation, a
crash) is a failed test, never an exception here. What may be stored is bounded: the result's `kind` and
`detail` and each test's `kind`, `message` and `error` are a failure kind and one printable line of at most
MESSAGE_LIMIT characters. The full text the code printed or raised (`output`, `full_detail`, each test's
`full_error`; at most OUTPUT_LIMIT characters each) is for logs the user asks for.

Example:
  python -m alpaca_lora.sandbox --code answer.py --test "assert factorial(5) == 120" --timeout-s 5
"""

from __future__ import annotations

import functools
import json
import os
import sys

# Only these modules load in the child before its code runs: the parent's own (subprocess, tempfile, ...)
# are imported where they are used.

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 512
ISOLATION_CHOICES = ("auto", "namespace", "audit-hook")
FILE_SIZE_LIMIT = 16 * 1024 * 1024
OPEN_FILES_LIMIT = 64
WORKDIR_MB = 64  # the working folder's size in the mount namespace (a tmpfs)
MAX_CREATIONS = 32  # files opened for writing, folders and links made, per run: bounds the disk used
OUTPUT_LIMIT = 2000
MESSAGE_LIMIT = 160
NAMESPACE_EXIT_SIGNAL = 128  # bubblewrap exits with 128 + N when the code was killed by signal N
SIGNAL_REASONS = {
    "SIGXCPU": "timeout (CPU time limit)",
    "SIGKILL": "killed (CPU time or memory limit)",
    "SIGXFSZ": "file size limit",
    "SIGSEGV": "crashed (segmentation fault)",
}


# ---- parent side -----------------------------------------------------------------------------------------


@functools.cache
def interpreter_paths() -> tuple[str, ...]:
    """The child's import path (sys.path of `python -I`): the standard library and installed packages."""
    import subprocess

    probe = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; print('\\n'.join(sys.path))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return tuple(path for path in probe.stdout.splitlines() if path and os.path.exists(path))


def visible_paths(readable: tuple[str, ...]) -> list[str]:
    """What the mount namespace shows read-only besides /usr: the interpreter, its import path, this file."""
    paths = [sys.base_prefix, sys.prefix, *interpreter_paths(), this_file(), *readable]
    shown: list[str] = []
    for path in paths:
        for variant in dict.fromkeys([os.path.abspath(path), os.path.realpath(path)]):
            if not any(variant == done or variant.startswith(done + os.sep) for done in shown):
                shown.append(variant)
    return shown


def this_file() -> str:
    """This script, which the child runs."""
    return os.path.realpath(__file__)


def bubblewrap_prefix(
    bwrap: str, workdir: str, readable: tuple[str, ...], extra: tuple[str, ...]
) -> list[str]:
    """bubblewrap's options: a new root showing /usr, the interpreter and `readable` read-only, and
    `workdir` as a tmpfs."""
    command = [bwrap, "--unshare-all", "--unshare-user", *extra, "--cap-drop", "ALL", "--die-with-parent"]
    command += ["--new-session", "--ro-bind", "/usr", "/usr", "--dev", "/dev"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        top = f"/{name}"
        if os.path.islink(top):  # merged /usr: /lib -> usr/lib
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    for path in visible_paths(readable):
        command += ["--ro-bind", path, path]
    return command + ["--size", str(WORKDIR_MB << 20), "--tmpfs", workdir, "--chdir", workdir]


@functools.cache
def namespace_support() -> tuple[tuple[str, ...] | None, str]:
    """(extra bubblewrap options that work here, "") or (None, why the mount namespace is unavailable)."""
    import shutil
    import subprocess
    import tempfile

    bwrap = shutil.which("bwrap")
    if not bwrap:
        return None, "bubblewrap (bwrap) is not installed"
    reason = ""
    # --disable-userns (bubblewrap >= 0.8) keeps the code from making namespaces of its own.
    for extra in (("--disable-userns",), ()):
        with tempfile.TemporaryDirectory(prefix="sandbox-probe-") as workdir:
            probe = subprocess.run(
                [*bubblewrap_prefix(bwrap, workdir, (), extra), sys.executable, "-I", "-c", "pass"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        if probe.returncode == 0:
            return extra, ""
        reason = (probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"])[-1]
    return None, f"bubblewrap cannot create namespaces here: {reason}"


@functools.cache
def network_namespace_prefix() -> tuple[str, ...]:
    """`unshare -rn` (new user + network namespace) when this machine allows it, else nothing."""
    import shutil
    import subprocess

    unshare = shutil.which("unshare")
    if not unshare:
        return ()
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=30)
    return (unshare, "-rn") if probe.returncode == 0 else ()


def isolation_layers(isolation: str = "auto") -> dict:
    """The layers a run gets with `isolation` on this machine: flags, names, and why a namespace is missing.

    auto: the strongest this machine allows; namespace: the mount namespace or an error; audit-hook: process
    limits and the audit hook alone (no namespaces).
    """
    if isolation not in ISOLATION_CHOICES:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATION_CHOICES)}, not {isolation!r}")
    extra, reason = namespace_support() if isolation != "audit-hook" else (None, "isolation is audit-hook")
    if isolation == "namespace" and extra is None:
        raise RuntimeError(f"the sandbox's mount namespace is not available: {reason}")
    mount = extra is not None
    network = mount or (isolation == "auto" and bool(network_namespace_prefix()))
    layers = ["process limits", "audit hook"]
    if mount:
        layers.append("mount, pid and network namespaces (bubblewrap)")
    elif network:
        layers.append("network namespace (unshare)")
    return {
        "process": True,
        "audit_hook": True,
        "mount_namespace": mount,
        "network_namespace": network,
        "layers": layers,
        "namespace_unavailable": None if mount else reason,
        "bubblewrap_options": list(extra or ()),
    }


def command_prefix(layers: dict, workdir: str, readable: tuple[str, ...]) -> list[str]:
    import shutil

    if layers["mount_namespace"]:
        return bubblewrap_prefix(
            shutil.which("bwrap"), workdir, readable, tuple(layers["bubblewrap_options"])
        )
    return list(network_namespace_prefix()) if layers["network_namespace"] else []


def run_tests(
    code: str,
    tests: list[str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    *,
    isolation: str = "auto",
    readable: tuple[str, ...] = (),
    packages: tuple[str, ...] = (),
) -> dict:
    """Run `code`, then each test, in a sandboxed child; return what passed and why the rest did not.

    isolation: auto, namespace or audit-hook (see isolation_layers); readable: more paths the code may read
    (read-only); packages: installed packages (top-level names) the code may import besides the standard
    library. The result: passed (every test passed), status (passed, failed, error: the code itself failed,
    timeout, or killed), kind and detail (bounded: may be stored), tests [{test, passed, kind, message, error,
    full_error}], output (what the code printed) and full_detail (logs only), and the isolation in force.
    """
    import secrets
    import signal
    import subprocess
    import tempfile

    layers = isolation_layers(isolation)
    readable = tuple(os.path.realpath(path) for path in readable)
    nonce = secrets.token_hex(16)
    job = {
        "code": code,
        "tests": list(tests),
        "nonce": nonce,
        "timeout_s": timeout_s,
        "memory_mb": memory_mb,
        "readable": list(readable),
        "packages": list(packages),
    }
    isolation_record = {**layers, "timeout_s": timeout_s, "memory_mb": memory_mb, "packages": list(packages)}
    with (
        tempfile.TemporaryDirectory(prefix="sandbox-", ignore_cleanup_errors=True) as workdir,
        tempfile.TemporaryFile() as stdout,
        tempfile.TemporaryFile() as stderr,
    ):
        # The child's streams are files: its file size limit bounds what the parent reads back.
        process = subprocess.Popen(
            [*command_prefix(layers, workdir, readable), sys.executable, "-I", "-B", this_file(), "--child"],
            cwd=workdir,
            env={"PATH": os.defpath, "HOME": workdir, "TMPDIR": workdir, "LC_ALL": "C.UTF-8"},
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        timed_out = False
        try:
            process.communicate(json.dumps(job).encode(), timeout=timeout_s + 2)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        streams = [read_back(stream) for stream in (stdout, stderr)]
    return summarize(nonce, tests, *streams, process.returncode, timed_out, isolation_record)


def read_back(stream) -> str:
    stream.seek(0)
    return stream.read(FILE_SIZE_LIMIT).decode("utf-8", "replace")


# ---- what comes back: parsed, bounded, never trusted -------------------------------------------------------


def clip(text, limit: int = OUTPUT_LIMIT) -> str:
    """At most `limit` characters of the end of `text`, valid UTF-8 (lone surrogates replaced)."""
    text = text if isinstance(text, str) else ""
    return text[-limit:].encode("utf-8", "replace").decode("utf-8")


def bounded(text) -> str:
    """One printable line of at most MESSAGE_LIMIT characters: the only free text that may be stored."""
    text = text if isinstance(text, str) else ""
    line = next((part for part in text.splitlines() if part.strip()), "").strip()
    line = "".join(char if char.isprintable() else "?" for char in line)
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 1] + "…"


def failure_kind(name) -> str:
    """An exception class name as given by the child, if it looks like one."""
    if isinstance(name, str) and name.isidentifier() and len(name) <= 64 and name.isascii():
        return name
    return "Exception"


def described(kind: str, message: str) -> str:
    return f"{kind}: {message}" if message else kind


def child_events(nonce: str, stdout: str) -> tuple[dict | None, dict[int, dict]]:
    """The child's load event and test events (the lines that carry the nonce and parse as events)."""
    loaded, results = None, {}
    for line in stdout.splitlines():
        if not line.startswith(nonce + " "):
            continue
        try:
            event = json.loads(line[len(nonce) + 1 :])
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("event") == "load" and loaded is None:
            loaded = event
        elif event.get("event") == "test" and type(event.get("index")) is int:
            results.setdefault(event["index"], event)
    return loaded, results


def raised(event: dict) -> dict | None:
    """kind, message (bounded) and full text of the exception an event reports, or None if none was raised."""
    if event.get("error_type") is None:
        return None
    kind, message = failure_kind(event["error_type"]), bounded(event.get("message"))
    return {
        "kind": kind,
        "message": message,
        "error": described(kind, message),
        "full": clip(event.get("error")),
    }


def signal_reason(returncode: int, via_bubblewrap: bool) -> str | None:
    import signal

    number = -returncode if returncode < 0 else 0
    if via_bubblewrap and returncode > NAMESPACE_EXIT_SIGNAL:
        number = returncode - NAMESPACE_EXIT_SIGNAL
    if not number:
        return None
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"killed by signal {number}"
    return SIGNAL_REASONS.get(name, f"killed by signal {number} ({name})")


def summarize(
    nonce: str,
    tests: list[str],
    stdout: str,
    stderr: str,
    returncode: int,
    timed_out: bool,
    isolation: dict,
) -> dict:
    """Turn the child's report lines and exit status into one result; tests it never reached fail."""
    loaded, results = child_events(nonce, stdout)
    load_error = raised(loaded) if loaded is not None else None
    if timed_out:
        reason = "timeout (wall-clock limit)"
    else:
        reason = signal_reason(returncode, isolation["mount_namespace"])
        if reason is None and (loaded is None or len(results) < len(tests)) and not load_error:
            reason = f"sandbox exited with status {returncode} before the end"
    outcomes = []
    for index, test in enumerate(tests):
        event = results.get(index)
        if event is not None and (failure := raised(event)) is None:
            outcomes.append({"test": test, "passed": True, "kind": None, "message": "", "error": None})
            continue
        if event is not None:
            kind, message, full = failure["kind"], failure["message"], failure["full"]
        else:
            kind, message = "not run", "the code failed to load" if load_error else reason
            full = ""
        outcomes.append(
            {
                "test": test,
                "passed": False,
                "kind": kind,
                "message": message,
                "error": described(kind, message),
                "full_error": full,
            }
        )
    if load_error:
        status, kind, detail = "error", load_error["kind"], load_error["error"]
    elif reason:
        status = "timeout" if "timeout" in reason else "killed"
        kind, detail = status, reason
    elif all(outcome["passed"] for outcome in outcomes):
        status, kind, detail = "passed", None, ""
    else:
        first = next(outcome for outcome in outcomes if not outcome["passed"])
        status, kind, detail = "failed", first["kind"], first["error"]
    return {
        "passed": status == "passed" and bool(tests),
        "status": status,
        "kind": kind,
        "detail": detail,
        "tests": outcomes,
        "output": clip((loaded or {}).get("output")),
        "full_detail": load_error["full"] if load_error else clip(stderr),
        "isolation": isolation,
    }


# ---- child side: runs inside the sandbox process, standard library only -----------------------------------

BLOCKED_EVENT_PREFIXES = (
    "socket.",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.fork",  # and os.forkpty
    "os.kill",  # and os.killpg
    "ctypes.",
    "resource.setrlimit",
    "resource.prlimit",
    "syslog.",
    # These reach the hook's own variables (closure cells, a traced frame's locals) and could rebind them.
    "gc.get_",
    "sys.settrace",
    "sys.setprofile",
)
# C modules that read, write or signal without audit events, refused at import; posix, _signal and
# _posixsubprocess are loaded (and disarmed) before the code runs, so importing them means reloading them.
DENIED_MODULES = frozenset(
    {
        "posix",
        "_signal",
        "_posixsubprocess",
        "_sqlite3",
        "_dbm",
        "_gdbm",
        "readline",
        "pwd",
        "grp",
        "spwd",
        "nis",
        "_posixshmem",
        "_multiprocessing",
    }
)
# Functions CPython runs without an audit event, removed from every loaded module before the code runs.
UNAUDITED_FUNCTIONS = {
    "posix": ("mknod", "mkfifo", "setpriority", "sched_setaffinity", "sched_setscheduler", "sched_setparam"),
    "_signal": ("pidfd_send_signal",),
    "_posixsubprocess": ("fork_exec",),
}
# Events whose path arguments are read: they must lie in the working folder or the readable paths.
READING_PATH_EVENTS = frozenset({"os.listdir", "os.scandir", "os.listxattr", "os.getxattr"})
# Events whose path arguments are changed: they must lie in the working folder. (os.symlink has its own
# check; shutil's events are not listed: shutil works through these.)
MUTATING_PATH_EVENTS = frozenset(
    {
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.mkdir",
        "os.chmod",
        "os.chown",
        "os.link",
        "os.truncate",
        "os.utime",
        "os.setxattr",
        "os.removexattr",
    }
)
CREATING_EVENTS = frozenset({"os.mkdir", "os.link", "os.symlink"})
TWO_PATHS = frozenset({"os.rename", "os.link"})
READABLE_DEVICES = frozenset({"/dev/null", "/dev/urandom", "/dev/random"})
WRITABLE_DEVICES = frozenset({"/dev/null"})


def set_limits(timeout_s: float, memory_mb: int) -> None:
    import resource

    cpu = max(1, int(timeout_s + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES_LIMIT, OPEN_FILES_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def refused(name: str):
    def refuse(*args, **kwargs):
        raise PermissionError(f"sandbox: {name} is not allowed")

    return refuse


def disarm() -> None:
    """Replace the UNAUDITED_FUNCTIONS in every loaded module that holds them (os re-exports posix's)."""
    dangerous = {}
    for module_name, names in UNAUDITED_FUNCTIONS.items():
        module = __import__(module_name)
        for name in names:
            if hasattr(module, name):
                function = getattr(module, name)
                dangerous[id(function)] = (function, f"{module_name}.{name}")
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for key, value in list(namespace.items()):
            if id(value) in dangerous and dangerous[id(value)][0] is value:
                namespace[key] = refused(dangerous[id(value)][1])


def confine(workdir: str, readable: tuple[str, ...], imports: tuple[str, ...], packages: tuple[str, ...]):
    """The audit hook for a run in `workdir` (read and write), which may also read `readable` and load
    extension modules from `imports`, and import the standard library and `packages`.

    Everything the hook uses is bound here, before the code runs, and is immutable or built in: the code may
    replace module attributes and builtins (os.path.realpath, os.lstat, isinstance, ...), and may reach the
    hook's frame through a traceback, but cannot change what the hook holds. It is one function for that
    reason: a helper function would be an object whose closure the code could rebind.
    """
    from itertools import count

    lstat, readlink, getcwd, decode, join = os.lstat, os.readlink, os.getcwd, bytes.decode, "".join
    str_, bytes_, int_, type_, isinstance_, os_error = str, bytes, int, type, isinstance, OSError
    permission_error, import_error = PermissionError, ImportError
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
    blocked, denied = BLOCKED_EVENT_PREFIXES, DENIED_MODULES
    importable = frozenset(sys.stdlib_module_names) | frozenset(packages)
    reading, mutating, creating, two_paths = (
        READING_PATH_EVENTS,
        MUTATING_PATH_EVENTS,
        CREATING_EVENTS,
        TWO_PATHS,
    )
    readable_devices, writable_devices = READABLE_DEVICES, WRITABLE_DEVICES
    directory, symlink, file_type = 0o040000, 0o120000, 0o170000
    limit, made, next_ = MAX_CREATIONS, count(1), next  # a counter the code could only advance
    root = os.path.realpath(workdir)
    working, readable_roots, import_roots = (root,), (root, *readable), tuple(imports)

    def hook(event: str, args: tuple) -> None:
        if event.startswith(blocked):
            raise permission_error(f"sandbox: {event} is not allowed")
        # What the event does to which argument: open, read (list), change, enter (chdir), load (a C module).
        if event == "open":
            flags = args[2]
            changes = type_(flags) is not int_ or flags & write_flags != 0
            checks = ((args[0], "change" if changes else "open"),)
        elif event == "import":
            name = args[0]
            parts = name.split(".") if type_(name) is str_ else [""]
            for part in parts:
                if part in denied or not part:
                    raise import_error(f"sandbox: importing {name} is not allowed")
            if parts[0] not in importable:
                raise import_error(f"sandbox: importing {name} is not allowed (not in the standard library)")
            checks = () if args[1] is None else ((args[1], "load"),)
        elif event == "os.chdir":
            checks = ((args[0], "enter"),)
        elif event in reading:
            checks = (("." if args[0] is None else args[0], "read"),)
        elif event == "os.symlink":
            # The link must lie in the working folder and so must its target, as the kernel will follow it:
            # from the folder the link is made in.
            target, link = args[0], args[1]
            target = decode(target, "utf-8", "surrogateescape") if isinstance_(target, bytes_) else target
            link = decode(link, "utf-8", "surrogateescape") if isinstance_(link, bytes_) else link
            if isinstance_(target, str_) and isinstance_(link, str_):
                target, link = join((target,)), join((link,))
                if not target.startswith("/"):
                    folder = link.rpartition("/")[0] if "/" in link else "."
                    target = (folder if folder.startswith("/") else getcwd() + "/" + folder) + "/" + target
            checks = ((target, "change"), (link, "change"))
        elif event in mutating:
            checks = (
                ((args[0], "change"), (args[1], "change")) if event in two_paths else ((args[0], "change"),)
            )
        else:
            return
        for value, action in checks:
            if type_(value) is int_ and action != "enter":
                continue  # a file descriptor, opened through this hook
            if isinstance_(value, bytes_):
                path = decode(value, "utf-8", "surrogateescape")
            elif isinstance_(value, str_):
                path = join((value,))  # a plain copy: a str subclass's methods are the code's
            else:
                raise permission_error(f"sandbox: {event} with an argument that is not a path")
            # The path resolved as the kernel walks it: every symbolic link (also /proc/self/root) and `..`.
            if not path.startswith("/"):
                path = getcwd() + "/" + path
            pending, parts, hops, kind = path.split("/")[::-1], [], 0, 0
            while pending:
                part = pending.pop()
                if part in ("", "."):
                    continue
                if part == "..":
                    if parts:
                        parts.pop()
                    continue
                candidate = "/".join(["", *parts, part])
                try:
                    kind = lstat(candidate).st_mode & file_type
                except os_error:
                    kind = 0  # does not exist (yet)
                if kind != symlink:
                    parts.append(part)
                    continue
                hops += 1
                if hops > 40:
                    raise permission_error(f"sandbox: {event}: too many symbolic links in {path!r}")
                target = readlink(candidate)
                if target.startswith("/"):
                    parts = []
                pending.extend(target.split("/")[::-1])
            path = "/".join(["", *parts]) or "/"
            inside = False
            for folder in working:
                inside = inside or path == folder or path.startswith(folder + "/")
            if action == "change":
                if not inside and path not in writable_devices:
                    raise permission_error(f"sandbox: {event}: changing {path!r} outside the working folder")
                continue
            if action == "enter":
                if path != root:
                    raise permission_error("sandbox: leaving the working folder (chdir) is not allowed")
                continue
            if action == "open" and kind == directory and not inside:
                # A folder's descriptor would let dir_fd= name paths that this hook resolves from the working
                # folder.
                raise permission_error(f"sandbox: opening the folder {path!r} outside the working folder")
            allowed = False
            for folder in import_roots if action == "load" else readable_roots:
                allowed = allowed or path == folder or path.startswith(folder + "/")
            if action == "load" and not allowed:
                raise import_error(f"sandbox: loading {args[0]} from {path!r} is not allowed")
            if not allowed and path not in readable_devices:
                why = "outside the working folder and the interpreter's files"
                raise permission_error(f"sandbox: {event}: reading {path!r} {why}")
        if (
            event == "open" and checks[0][1] == "change" and type_(checks[0][0]) is not int_
        ) or event in creating:
            if next_(made) > limit:
                raise permission_error(f"sandbox: {event}: more than {limit} files, folders or links made")

    return hook


def harness(nonce: str, code: str, tests: list[str], captured):
    """The run itself, as a function that uses only what is bound here, before the code runs: code that
    replaces builtins or this module's functions cannot make a failing test pass that way. (Code that walks
    its frames up to these names can; results are not tamper-proof: docs/sandbox.md.)"""
    from json.encoder import encode_basestring_ascii as quote  # the C encoder: no module state to replace

    write, exit_now, base_exception, type_, str_, isinstance_ = (
        os.write,
        os._exit,
        BaseException,
        type,
        str,
        isinstance,
    )
    run, build, join, output, limit = exec, compile, "".join, captured.getvalue, OUTPUT_LIMIT
    tests = tuple(tests)
    indices = range(len(tests))

    def text(function, value) -> str:
        try:
            result = function(value)
            return join((result,)) if isinstance_(result, str_) else ""
        except base_exception:  # noqa: BLE001 - a broken __str__ or __name__ is the code's failure
            return "<unprintable>"

    def report(event: str, fields: str, error) -> None:
        if error is None:
            fields += '"error_type":null'
        else:
            kind, message = (
                text(lambda value: type_(value).__name__, error)[:limit],
                text(str_, error)[:limit],
            )
            full = f"{kind}: {message}" if message else kind
            fields += f'"error_type":{quote(kind)},"message":{quote(message)},"error":{quote(full)}'
        line = f'{nonce} {{"event":"{event}",{fields}}}\n'.encode()
        while line:  # a write may be partial
            line = line[write(1, line) :]

    def run_job() -> None:
        namespace = {"__name__": "__sandbox__"}
        failure = None
        try:
            run(build(code, "<answer>", "exec"), namespace)
        except base_exception as error:  # noqa: BLE001 - anything the code does is its failure, reported
            failure = error
        report("load", f'"output":{quote(output()[-limit:])},', failure)
        if failure is None:
            for index in indices:
                try:
                    run(build(tests[index], f"<test {index}>", "exec"), namespace)
                except base_exception as error:  # noqa: BLE001
                    report("test", f'"index":{index},', error)
                else:
                    report("test", f'"index":{index},', None)
        exit_now(0)  # now: threads the code left running must not hold the report back

    return run_job


def child_main() -> None:
    """Read the job, set the limits, confine the process, run the code and each test (see harness)."""
    import io

    chunks = []
    while chunk := os.read(0, 1 << 16):
        chunks.append(chunk)
    job = json.loads(b"".join(chunks).decode("utf-8"))
    sys.stdin = io.StringIO("")  # input() gets end of file, not the job
    os.environ.pop("PWD", None)  # bubblewrap sets it; the environment is the same in every isolation
    set_limits(job["timeout_s"], job["memory_mb"])
    imports = tuple(os.path.realpath(path) for path in sys.path if path and os.path.exists(path))
    hook = confine(os.getcwd(), (*imports, *job["readable"]), imports, tuple(job["packages"]))
    captured = io.StringIO()
    run_job = harness(job.pop("nonce"), job["code"], job["tests"], captured)
    del job
    __import__("_posixsubprocess")  # loaded now, so that disarm() reaches it and importing it is a reload
    disarm()
    sys.stdout = sys.stderr = captured
    sys.addaudithook(hook)
    run_job()


# ---- command line ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--code", required=True, help="Python file with the code under test")
    parser.add_argument("--test", action="append", default=[], help="assert statement (repeatable)")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="default: %(default)s")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB, help="default: %(default)s")
    parser.add_argument("--isolation", choices=ISOLATION_CHOICES, default="auto", help="default: %(default)s")
    parser.add_argument("--readable", action="append", default=[], help="path the code may read (repeatable)")
    parser.add_argument("--package", action="append", default=[], help="installed package it may import")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from pathlib import Path

    args = parse_args(argv)
    code = Path(args.code).read_text(encoding="utf-8")
    result = run_tests(
        code,
        args.test,
        args.timeout_s,
        args.memory_mb,
        isolation=args.isolation,
        readable=tuple(args.readable),
        packages=tuple(args.package),
    )
    print(json.dumps(result, ensure_ascii=False, indent=2))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child_main()
    else:
        main()
