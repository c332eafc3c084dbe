"""`ml-platform` commands as real processes, without paying the imports each time.

A CLI process spends ~4 CPU-s importing Dagster, MLflow, scikit-learn and pandas before it does
anything; the suite starts ~40 of them. One server process per test worker imports them once and
forks a child per command: each command is still its own process (own PID, own state, killed by
SIGKILL, exits with its own code), started from a fresh interpreter's imports and nothing else (the
server runs no platform code). ``ML_PLATFORM_TESTS_COLD=1`` runs every command from a fresh
interpreter instead (``python -m ml_platform``), e.g. to rule the server out when a test fails.

    run(["--config", cfg, "run"], cwd=...)      -> subprocess.CompletedProcess (text)
    popen(["--config", cfg, "run"], cwd=..., stdout=PIPE, stderr=STDOUT)  -> Popen-like
"""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ml_platform.runtime import run_launcher

COLD_ENV = "ML_PLATFORM_TESTS_COLD"
PIPE, STDOUT, DEVNULL = subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL

# What a `run` imports: the libraries a run worker imports (the run launcher's forkserver preloads
# them), ONNX Runtime and the platform's own modules. Not the modules with import-time side effects
# (defs.location builds Definitions from the configuration, cli.celery_app, serving.server).
PRELOAD = (
    *run_launcher.PRELOAD,
    "onnxruntime",
    "ml_platform.defs.definitions",
    "ml_platform.cli.main",
    "ml_platform.cli.approval",
    "ml_platform.control.runner",
    "ml_platform.control.status",
    "ml_platform.control.reconcile",
)


# ---------------------------------------------------------------- the server (its own process)


def _serve(path: str) -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # the child imports it again and shows the error where it belongs
            pass
    # The preloaded objects into the permanent generation: a child's full collections skip them
    # instead of scanning them all (short-lived commands: what they leave is freed at exit).
    gc.collect()
    gc.freeze()
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(path)
    srv.listen(64)
    parent = os.getppid()
    children: dict[int, socket.socket] = {}
    print("ready", flush=True)
    while os.getppid() == parent:  # the test worker gone: so is the server
        if select.select([srv], [], [], 0.05)[0]:
            _accept(srv, children)
        _reap(children)


def _accept(srv: socket.socket, children: dict[int, socket.socket]) -> None:
    """One request: fork its child and answer with the pid once the child is set up (its session
    exists, its cwd was valid), or with the reason it could not be."""
    conn, _ = srv.accept()
    fds: list[int] = []
    try:
        msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
        req = json.loads(msg)
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(ready_r)
                _child(req, fds, ready_w, [srv, conn, *children.values()])
            finally:
                os._exit(1)
        os.close(ready_w)
        with open(ready_r, "rb") as ready:
            setup = ready.read().decode()  # empty once the child got as far as the command
        conn.send(setup.encode() if setup else str(pid).encode())
        children[pid] = conn
    except Exception:  # a client gone mid-request, a bad request: that request only
        conn.close()
    finally:
        for fd in fds:
            os.close(fd)


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            try:
                conn.send(str(os.waitstatus_to_exitcode(status)).encode())
            except OSError:
                pass
            conn.close()


def _child(req: dict, fds: list[int], ready: int, inherited: list[socket.socket]) -> None:
    """In the forked child: become the command's process, run it, exit as the interpreter would."""
    try:
        for s in inherited:
            s.close()
        if req["new_session"]:
            os.setsid()
        if req["fsize"] is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (req["fsize"], req["fsize"]))
        os.chdir(req["cwd"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in {null, *fds}:
            os.close(fd)
    except OSError as e:  # what Popen would raise in the test
        os.write(ready, f"error {e.errno} {e.strerror}: {req['cwd']}".encode())
        os._exit(1)
    os.close(ready)
    rc = 1
    try:
        os.environ.clear()
        os.environ.update(req["env"])
        sys.path[0] = req["cwd"]  # as `python -m` has it
        if "numpy" in sys.modules:  # a fresh interpreter seeds numpy's global generator itself
            sys.modules["numpy"].random.seed()
        from ml_platform.cli.main import QUIET_MLFLOW, main

        # MLflow set its loggers' level from the environment when the server imported it; a fresh
        # command sets QUIET_MLFLOW before MLflow is imported.
        for k, v in QUIET_MLFLOW.items():
            os.environ.setdefault(k, v)
        from mlflow.utils.logging_utils import _configure_mlflow_loggers

        _configure_mlflow_loggers("mlflow")
        sys.argv = [str(Path(importlib.import_module("ml_platform").__file__).parent / "__main__.py"), *req["args"]]
        try:
            code = main(req["args"])
        except SystemExit as e:
            code = e.code
        if code is None:
            rc = 0
        elif isinstance(code, int):
            rc = code
        else:
            print(code, file=sys.stderr)
    except KeyboardInterrupt:
        rc = -signal.SIGINT
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:  # what Py_FinalizeEx does before it exits: wait for threads, run atexit handlers
            threading._shutdown()
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            if rc < 0:  # died of a signal, as an interpreter re-raising it would
                signal.signal(-rc, signal.SIG_DFL)
                os.kill(os.getpid(), -rc)
            os._exit(rc & 0xFF)


# ---------------------------------------------------------------- the client (in the test worker)

_server: tuple[subprocess.Popen, str] | None = None
_lock = threading.Lock()
START_TIMEOUT = 180  # the imports on a loaded 2-core machine


def _address() -> str:
    global _server
    with _lock:
        if _server is None or _server[0].poll() is not None:
            where = tempfile.mkdtemp(prefix="warm-")
            path, log = os.path.join(where, "s"), os.path.join(where, "server.log")
            with open(log, "wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "ml_platform_tests.e2e.warm", path],
                    stdout=subprocess.PIPE,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    text=True,
                    cwd=Path(__file__).resolve().parents[2],  # where ml_platform_tests imports from
                )
            ready = select.select([proc.stdout], [], [], START_TIMEOUT)[0]
            line = proc.stdout.readline() if ready else ""
            if line.strip() != "ready":
                _stop(proc, where)
                raise RuntimeError(f"the warm command server did not start ({line!r}):\n{Path(log).read_text()}")
            _server = (proc, path)
            atexit.register(_stop, proc, where)
        return _server[1]


def _stop(proc: subprocess.Popen, where: str) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # and its children still in its group
    except ProcessLookupError:
        pass
    proc.wait()
    if not os.environ.get("ML_PLATFORM_TESTS_KEEP_WARM_LOG"):
        shutil.rmtree(where, ignore_errors=True)


class WarmProcess:
    """The parts of subprocess.Popen the tests use, for a child of the warm server."""

    def __init__(self, args, cwd, env, stdout, stderr, text, new_session, fsize):
        self.args = ["ml-platform", *map(str, args)]
        self.returncode: int | None = None
        self.stdout = self.stderr = None
        ends, keep = [], []
        for target, attr in ((stdout, "stdout"), (stderr, "stderr")):
            if target is STDOUT:
                ends.append(ends[0])
            elif target is PIPE:
                r, w = os.pipe()
                setattr(self, attr, open(r, "r" if text else "rb", closefd=True))
                ends.append(w)
                keep.append(w)
            elif target is None:
                ends.append(os.dup(1 if attr == "stdout" else 2))
                keep.append(ends[-1])
            elif target is DEVNULL:
                ends.append(os.open(os.devnull, os.O_WRONLY))
                keep.append(ends[-1])
            else:  # a file object
                ends.append(target.fileno())
        req = {
            "args": [str(a) for a in args],
            "cwd": str(cwd),
            "env": {str(k): str(v) for k, v in (os.environ if env is None else env).items()},
            "new_session": new_session,
            "fsize": fsize,
        }
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            msg = json.dumps(req).encode()
            self._conn.connect(_address())
            socket.send_fds(self._conn, [msg], ends)
            answer = self._conn.recv(4096).decode()
        except BaseException:
            self._conn.close()
            raise
        finally:
            for fd in keep:
                os.close(fd)
        if not answer.isdigit():  # the child could not be set up: as Popen raises it
            self._conn.close()
            if answer.startswith("error "):
                errno_, _, text = answer[6:].partition(" ")
                raise OSError(int(errno_), text)
            raise RuntimeError(f"the warm command server did not start {self.args}: {answer!r}")
        self.pid = int(answer)

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._conn], [], [], 0)[0]:
            self._collect()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._conn], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._collect()
        return self.returncode

    def _collect(self) -> None:
        data = self._conn.recv(64)
        self._conn.close()
        if not data:
            raise RuntimeError(f"the warm command server died while running {self.args}")
        self.returncode = int(data)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # the server reaps its children at once: never signal a reused pid
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def communicate(self, timeout: float | None = None) -> tuple:
        out: dict[str, object] = {}

        def read(name: str) -> None:
            stream = getattr(self, name)
            try:
                out[name] = stream.read()
            except Exception as e:  # e.g. output that is not UTF-8: raised in the test, not lost
                out[name] = e
            finally:
                stream.close()

        readers = [
            threading.Thread(target=read, args=(a,), daemon=True) for a in ("stdout", "stderr") if getattr(self, a)
        ]
        for t in readers:
            t.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self.wait(timeout)
            for t in readers:
                t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if any(t.is_alive() for t in readers):  # a grandchild still holds the pipe
                raise subprocess.TimeoutExpired(self.args, timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        for value in out.values():
            if isinstance(value, Exception):
                raise value
        return out.get("stdout"), out.get("stderr")


def popen(args, *, cwd, env=None, stdout=None, stderr=None, text=True, new_session=False, fsize=None):
    """An `ml-platform ARGS` process (a fresh interpreter's when ML_PLATFORM_TESTS_COLD is set)."""
    if os.environ.get(COLD_ENV):
        pre = None
        if fsize is not None:
            import resource

            def pre():
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        return subprocess.Popen(
            [sys.executable, "-m", "ml_platform", *map(str, args)],
            cwd=cwd,
            env=env,
            stdout=stdout,
            stderr=stderr,
            text=text,
            start_new_session=new_session,
            preexec_fn=pre,
        )
    return WarmProcess(args, cwd, env, stdout, stderr, text, new_session, fsize)


def run(args, *, cwd, env=None, timeout: float = 300, fsize=None) -> subprocess.CompletedProcess:
    """`ml-platform ARGS` to the end, output captured as text (like subprocess.run)."""
    proc = popen(args, cwd=cwd, env=env, stdout=PIPE, stderr=PIPE, fsize=fsize)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise subprocess.TimeoutExpired(["ml-platform", *map(str, args)], timeout) from None
    return subprocess.CompletedProcess(["ml-platform", *map(str, args)], proc.returncode, out, err)


if __name__ == "__main__":
    _serve(sys.argv[1])
