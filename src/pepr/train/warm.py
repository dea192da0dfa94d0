"""Warm packed allocations: one set-up of Python, torch and timm for every cell of an allocation.

Each cell stays its own ``pepr train`` process and Snakemake job (own outputs, resume, failure
record, measurement windows); what is shared is the start-up. The first ``pepr train`` of an
allocation starts a fork server: a process that imports torch, timm and the training path once
and then waits on a Unix socket in a private folder. Every ``pepr train`` of the allocation
(the first one included) is a light client: it sends its arguments, working directory and
environment, passes its stdin/stdout/stderr (and the failure-notice descriptor) with
``SCM_RIGHTS``, and exits with the exit status the server reports. For each cell the server
forks one child that runs exactly what a cold ``pepr train`` runs (:func:`pepr.cli.main`) with
the client's descriptors, directory and environment.

Why a fork server (and not a long-lived worker that trains cells in-process):

- isolation: a segfault, an out-of-memory kill or leaked state in one cell ends that child
  only; the other cells' results, written by their own children, are untouched, and the next
  cell gets a fresh child;
- equal measurements: a child starts from the server's state right after the imports, which is
  the state a cold process reaches before it loads its data, so the memory baseline, the
  allocator's settings and the measured windows are those of a cold process (a worker reusing
  its heap, CUDA caching allocator and cuDNN autotuning across cells would not be);
- CUDA: a CUDA context cannot survive ``fork``, so the server never initialises CUDA and each
  child creates its own context (its first CUDA call). That cost (~0.3-1 s on a data-centre GPU,
  plus cuBLAS/cuDNN loading) is paid per cell; imports (several CPU seconds) are paid once.

Which cells share a server: the allocation key is ``SLURM_JOB_ID`` (a packed group of K cells in
one allocation), else ``PEPR_WARM_KEY``, else the local Snakemake driver found among the
client's ancestors; with none (``pepr train`` by hand) training is cold, in-process. The key
also covers the Python executable, pepr's source files and the environment variables read at
import time, so a server never runs a cell with other code or settings. ``PEPR_WARM=0``
disables the server. Any failure to reach or start a server falls back to cold training.

A killed client (Snakemake cancelling the job, ``scancel``) ends its child: the child watches
the connection and terminates when it closes, as a cold process would be terminated; the
finished epochs are in resume.pt as always. The server exits after :data:`IDLE_TIMEOUT_S`
without a client, or when the driver process it serves is gone.
"""

from __future__ import annotations

import array
import gc
import hashlib
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import subprocess

#: Environment variable that turns the fork server off (``0``).
WARM_VARIABLE = "PEPR_WARM"
#: Environment variable naming an allocation explicitly (several ``pepr train`` sharing one server).
KEY_VARIABLE = "PEPR_WARM_KEY"
#: Seconds a server waits for the next cell before it exits (``PEPR_WARM_IDLE_S`` overrides).
IDLE_TIMEOUT_S = 60.0
#: Environment variable with the idle timeout of a server a client starts.
IDLE_VARIABLE = "PEPR_WARM_IDLE_S"
#: Seconds a client waits for a server it started to be ready (it imports torch and timm).
START_TIMEOUT_S = 180.0
#: Environment variables read at import time by torch, timm, huggingface_hub or the C libraries:
#: a client whose values differ gets another server.
IMPORT_TIME_PREFIXES = (
    "HF_",
    "HUGGINGFACE",
    "TORCH",
    "PYTORCH",
    "TIMM",
    "PYTHON",
    "OMP_",
    "MKL_",
    "KMP_",
    "OPENBLAS",
    "CUDA_",
    "NVIDIA_",
    "LD_",
    "XDG_CACHE_HOME",
    "HOME",
    "TMPDIR",
    "PEPR_",
)
_MAX_MESSAGE = 1 << 22
_MAX_SOCKET_PATH = 107  # Linux sun_path, less the terminating NUL
_HIGH_FD = 100  # where a child parks descriptors while it puts the client's in place
_FD_NAMES = ("stdin", "stdout", "stderr", "notify")


def allocation_key(
    environ: Mapping[str, str], ancestors: Callable[[], Sequence[tuple[int, str]]] | None = None
) -> str | None:
    """Name of the allocation this process belongs to, or None (then training is cold).

    ``SLURM_JOB_ID`` (every job of a packed allocation has it), else ``PEPR_WARM_KEY``, else
    ``snakemake-<pid>`` of the nearest ancestor whose command line runs Snakemake (a local
    workflow run); ``ancestors`` yields ``(pid, command line)`` from the parent up (default:
    /proc).
    """
    if environ.get(WARM_VARIABLE, "").strip() == "0":
        return None
    slurm = environ.get("SLURM_JOB_ID", "").strip()
    if slurm:
        return f"slurm-{slurm}"
    explicit = environ.get(KEY_VARIABLE, "").strip()
    if explicit:
        return f"key-{explicit}"
    for pid, command in (ancestors or _proc_ancestors)():
        if runs_snakemake(command):
            return f"snakemake-{pid}"
    return None


def runs_snakemake(command: str) -> bool:
    """Whether a command line runs the Snakemake program (``snakemake ...``, ``python
    .../bin/snakemake ...``, ``python -m snakemake ...``, ``.../snakemake/__main__.py``). Judged on
    the program and module words, not a substring: a pytest run of ``tests/test_snakemake_x.py``
    or a project folder named ``snakemake-runs`` is no driver."""
    words = command.split()[:4]
    for index, word in enumerate(words):
        name = os.path.basename(word)
        if name == "snakemake" or (word == "-m" and words[index + 1 : index + 2] == ["snakemake"]):
            return True
        if name == "__main__.py" and os.path.basename(os.path.dirname(word)) == "snakemake":
            return True
    return False


def _proc_ancestors(limit: int = 4) -> list[tuple[int, str]]:
    """``(pid, command line)`` of up to ``limit`` ancestors of this process (Linux /proc)."""
    found, pid = [], os.getppid()
    for _ in range(limit):
        if pid <= 1:
            break
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
        except OSError:
            break
        found.append((pid, command))
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the command name in parentheses
    return found


def server_fingerprint(environ: Mapping[str, str]) -> str:
    """Digest of what a server fixes at its start: the interpreter, pepr's source files (path,
    size, modification time) and the import-time environment variables."""
    import pepr

    digest = hashlib.sha256(sys.executable.encode())
    root = Path(pepr.__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        info = path.stat()
        digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    for name in sorted(environ):
        if name.startswith(IMPORT_TIME_PREFIXES) and name not in (WARM_VARIABLE, KEY_VARIABLE, IDLE_VARIABLE):
            digest.update(f"{name}={environ[name]}\n".encode())
    return digest.hexdigest()[:16]


def socket_path(key: str, fingerprint: str) -> Path:
    """The server's socket: in a folder only this user can enter (``$XDG_RUNTIME_DIR`` or the
    temporary folder), short enough for a Unix socket address."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("TMPDIR") or "/tmp")
    if len(str(base)) > _MAX_SOCKET_PATH - 50:  # pepr-warm-UID/<20 hex>.sock must fit sun_path
        base = Path("/tmp")
    folder = base / f"pepr-warm-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise OSError(f"{folder} is not a private folder of this user")
    name = hashlib.sha256(f"{key}\0{fingerprint}".encode()).hexdigest()[:20]
    return folder / f"{name}.sock"


# --------------------------------------------------------------------------------------------
# Messages: 4-byte length + JSON, descriptors alongside the first byte
# --------------------------------------------------------------------------------------------


def _send_message(sock: socket.socket, payload: dict, fds: Sequence[int] = ()) -> None:
    data = json.dumps(payload).encode()
    frame = struct.pack("!I", len(data)) + data
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        sent = sock.sendmsg([frame[:1]], ancillary)
        frame = frame[sent:]
    sock.sendall(frame)


def _receive_exact(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive_message(sock: socket.socket, max_fds: int = 0) -> tuple[dict, list[int]]:
    fds: list[int] = []
    if max_fds:
        first, ancillary, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(max_fds * array.array("i").itemsize))
        if not first:
            raise ConnectionError("connection closed")
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(data[: len(data) - len(data) % received.itemsize])
                fds.extend(received)
        head = first + _receive_exact(sock, 3)
    else:
        head = _receive_exact(sock, 4)
    (size,) = struct.unpack("!I", head)
    if size > _MAX_MESSAGE:
        raise ConnectionError(f"message of {size} bytes")
    return json.loads(_receive_exact(sock, size)), fds


# --------------------------------------------------------------------------------------------
# The client (pepr train)
# --------------------------------------------------------------------------------------------


def train_through_server(
    argv: Sequence[str], log: Callable[[str], None], notify_variable: str | None = None
) -> int | None:
    """Hand ``pepr train ARGV`` to this allocation's server (started when there is none) and
    return the cell's exit status; None when there is no allocation or no server can be had
    (the caller then trains cold, in-process). ``notify_variable`` names the environment
    variable holding the failure-notice descriptor, passed along with stdin/stdout/stderr."""
    environ = dict(os.environ)
    key = allocation_key(environ)
    if key is None:
        return None
    try:
        path = socket_path(key, server_fingerprint(environ))
        sock = _connect(path)
        if sock is None:
            server = _start_server(path, key, environ)
            sock = _connect(path, wait_s=START_TIMEOUT_S, alive=lambda: server.poll() is None or _server_running(path))
        if sock is None:
            log(f"pepr train: no warm server at {path}; training in this process")
            return None
        return _hand_over(
            sock,
            argv,
            environ,
            notify_variable,
            lambda pid: log(
                f"pepr train: cell trained by process {pid}, forked by the warm server of allocation {key}"
            ),
        )
    except (OSError, ConnectionError, ValueError) as exc:
        log(f"pepr train: warm server unavailable ({type(exc).__name__}: {exc}); training in this process")
        return None


def _connect(path: Path, wait_s: float = 0.0, alive: Callable[[], bool] = lambda: True) -> socket.socket | None:
    """A connection to the server on ``path``, waiting up to ``wait_s`` while ``alive()`` says
    a server is still starting (the one this client started, or the one that won the race)."""
    deadline = time.monotonic() + wait_s
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline or not alive():
                return None
            time.sleep(0.05)


def _server_running(path: Path) -> bool:
    """Whether a server for ``path`` holds its lock (is starting or serving)."""
    import fcntl

    try:
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


def _start_server(path: Path, key: str, environ: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start the server detached (own session, no inherited descriptors: Snakemake waits for
    the job's output pipes, never for the server); it binds ``path`` when it is ready."""
    import subprocess

    log_file = path.with_suffix(".log")
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pepr.train.warm",
                str(path),
                key,
                environ.get(IDLE_VARIABLE, "") or str(IDLE_TIMEOUT_S),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            close_fds=True,
            start_new_session=True,
            cwd="/",
        )


def _hand_over(
    sock: socket.socket,
    argv: Sequence[str],
    environ: Mapping[str, str],
    notify_variable: str | None,
    started: Callable[[int], None],
) -> int:
    """Send the cell with this process's descriptors; wait for its exit status."""
    fds = [0, 1, 2]
    notify = environ.get(notify_variable, "") if notify_variable else ""
    notify_fd = int(notify) if notify.isdigit() and int(notify) > 2 else None
    if notify_fd is not None:
        try:
            os.fstat(notify_fd)
            fds.append(notify_fd)
        except OSError:
            notify_fd = None
    sys.stdout.flush()
    sys.stderr.flush()
    request = {"argv": list(argv), "cwd": os.getcwd(), "environ": dict(environ), "notify_fd": notify_fd}
    with sock:
        _send_message(sock, request, fds)
        reply, _ = _receive_message(sock)  # a server closing down resets here: the caller trains cold
        if "pid" not in reply:
            return int(reply["status"])
        started(int(reply["pid"]))  # the cell runs there now: never train it here too
        try:
            reply, _ = _receive_message(sock)
        except (OSError, ConnectionError, ValueError):
            print(
                "pepr train: lost the warm server while it trained this cell (the server was killed)",
                file=sys.stderr,
                flush=True,
            )
            return 1
    return int(reply["status"])


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def prepare_process() -> None:
    """What the server does once and each cell's child then inherits: the imports of the
    training path (torch, timm without torchvision's models, CodeCarbon, the FLOP counter, pepr's
    training modules) and, on a machine without NVIDIA devices, CodeCarbon's hardware probe
    (CodeCarbon keeps its outcome per process and reuses it for a tracker with the same
    settings; with a GPU, NVML handles must not cross a fork, so each child probes itself).
    Never CUDA: a context does not survive fork. First of all the allocator's thresholds are
    pinned (:func:`pepr.train.measure.pin_allocator`), as a cold ``pepr train`` pins them before
    its imports: a child inherits them with the heap, so it allocates as a cold process does."""
    from pepr.train import measure

    measure.pin_allocator()  # the child logs the reason when this cannot be done (off glibc)
    import pepr.cli
    import pepr.train.run
    from pepr.train.imports import import_timm

    pepr.cli.build_parser()  # every sub-command's module, as a child's pepr.cli.main needs them
    import_timm()
    measure.import_dependencies()
    if not any(Path(path).exists() for path in ("/dev/nvidiactl", "/proc/driver/nvidia")):
        meter = measure.EnergyMeter("USA")  # the country is not part of the hardware probe
        meter.start()
        meter.close()
    gc.collect()
    gc.freeze()  # shared with every child, never touched by its collections (no copy-on-write)


def serve(path: Path, key: str, idle_timeout_s: float = IDLE_TIMEOUT_S) -> int:
    """Run the fork server on ``path`` until it has been idle ``idle_timeout_s`` seconds (or the
    Snakemake driver of a ``snakemake-<pid>`` key is gone)."""
    import fcntl
    import selectors

    lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held for life: one server per socket
    except BlockingIOError:
        os.close(lock)
        return 0  # another client's server won the race; this client connects to it
    prepare_process()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    listener.bind(str(temporary))
    listener.listen(64)
    bound = os.stat(temporary).st_ino
    os.replace(temporary, path)  # ready: clients connect only once everything is imported
    driver = int(key.split("-", 1)[1]) if key.startswith("snakemake-") and key.split("-", 1)[1].isdigit() else None
    children: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    idle_since = time.monotonic()
    try:
        while True:
            for _ in selector.select(timeout=0.2):
                connection, _ = listener.accept()
                pid = _start_cell(connection, listener, lock)
                if pid is not None:
                    children[pid] = connection
            _reap(children)
            if children:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > idle_timeout_s or (driver is not None and not _alive(driver)):
                return 0
    finally:
        selector.close()
        listener.close()
        try:  # unless a newer server has replaced the socket file
            if os.stat(path).st_ino == bound:
                path.unlink()
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _start_cell(connection: socket.socket, listener: socket.socket, lock: int) -> int | None:
    """Receive one cell and fork its child; the child's pid (None for a bad request)."""
    try:
        connection.settimeout(30)
        request, fds = _receive_message(connection, max_fds=len(_FD_NAMES))
        connection.settimeout(None)
    except (OSError, ConnectionError, ValueError):
        connection.close()
        return None
    pid = os.fork()
    if pid == 0:  # the cell's child: never returns
        status = 1
        try:
            listener.close()
            os.close(lock)  # the server's, not the cell's
            status = _run_cell(connection, request, fds)
        except BaseException:  # noqa: BLE001 - reported on the cell's own stderr, then the exit status
            import traceback

            traceback.print_exc()
        finally:
            os._exit(status)
    for fd in fds:
        os.close(fd)
    try:
        _send_message(connection, {"pid": pid})
    except OSError:
        pass  # the client is gone; its child notices the closed connection itself
    return pid


def _reap(children: dict[int, socket.socket]) -> None:
    """Report the exit status of every finished child to its client (128 + signal when killed)."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        if connection is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        try:
            _send_message(connection, {"status": code if code >= 0 else 128 - code})
        except OSError:
            pass
        connection.close()


def _run_cell(connection: socket.socket, request: dict, fds: list[int]) -> int:
    """In the child: take the client's descriptors, directory and environment; run pepr train."""
    import fcntl
    import signal
    import threading

    # first out of the way of the numbers they are given (0, 1, 2 and the notice descriptor)
    connection = socket.socket(fileno=fcntl.fcntl(connection.detach(), fcntl.F_DUPFD_CLOEXEC, _HIGH_FD))
    moved = []
    for fd in fds:
        moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD))
        os.close(fd)
    notify_fd = request.get("notify_fd")
    targets = [0, 1, 2] + ([int(notify_fd)] if notify_fd is not None else [])
    for source, target in zip(moved, targets):
        os.dup2(source, target)
    for fd in moved:
        os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own descriptors, kept open
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["environ"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch() -> None:  # the client was killed (job cancelled): end this cell as a kill would
        try:
            while connection.recv(1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="pepr-warm-client", daemon=True).start()
    from pepr.cli import main

    try:
        status = main(request["argv"])  # argv given: trained here, never handed to a server again
    except SystemExit as exc:  # argparse errors exit 2, as in a cold process
        status = exc.code if isinstance(exc.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    return int(status or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pepr.train.warm SOCKET KEY IDLE_S``: the server process (started by a client)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: python -m pepr.train.warm SOCKET KEY IDLE_SECONDS", file=sys.stderr)
        return 2
    return serve(Path(args[0]), args[1], float(args[2]))


if __name__ == "__main__":
    sys.exit(main())
