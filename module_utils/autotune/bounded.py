"""Work that pushed code drives on the controller (a template's rendering, a script's rewrite), bounded.

Jinja2's sandbox keeps a template from the controller's Python but not from its CPU or memory: three nested
``range(100000)`` loops never end, ``'A' * 2**31`` asks for 2 GiB, and a script rewritten with 20,000 blocks takes
seconds and hundreds of MB (issue 20 row 7). Counting inside the sandbox misses the many other ways (filters such as
``center``, ``%`` formatting, ``**``); a forked child with ``RLIMIT_CPU`` and ``RLIMIT_AS``, and a wall-clock
deadline kept by the parent, bounds them all. The child does the work and sends back its result (JSON through a
pipe); whatever it takes beyond the bounds ends it, and the caller gets one line saying which bound was passed.
The fork costs a few milliseconds per call (docs/security.md).
"""
import contextlib
import faulthandler
import json
import os
import resource
import select
import signal
import threading
import time

from ansible.module_utils.autotune.errors import AutotuneError

CPU_SECONDS = 5        # CPU time the work may take
WALL_SECONDS = 20      # the parent's deadline (a loaded host runs the child slower than its CPU time)
MEMORY_MIB = 256       # address space the work may add to what the controller already holds
RESULT_MIB = 1         # the most the result (model code) may weigh: a rendered model is a few KB
_CHUNK = 1 << 20
# Held by a thread while it imports modules in the background (the plot's imports, optuna_dashboard's): a child forked
# then inherits that import's module locks with no thread to release them, and hangs on its first import of the same
# module until the wall deadline (seen as "rendering ... did not finish within 20 s" under load). run() forks only
# once no background import is under way.
_BACKGROUND_IMPORTS = threading.Lock()


@contextlib.contextmanager
def background_import():
    """Around imports done off the main thread, so that run() does not fork in their middle."""
    with _BACKGROUND_IMPORTS:
        yield


def run(func, args, what, expected):
    """``func(*args)`` (its result JSON-serialisable) in a child bounded in CPU, memory and wall time.

    An AutotuneError raised by ``func`` is raised again here with its lines; any bound passed ends in one
    AutotuneError: "<what> took over N s / needed more than N MiB; <expected>"."""
    cpu_seconds, memory_mib, wall_seconds = CPU_SECONDS, MEMORY_MIB, WALL_SECONDS
    read_end, write_end = os.pipe()
    with _BACKGROUND_IMPORTS:
        pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(func, args, write_end, cpu_seconds, memory_mib)
    os.close(write_end)
    try:
        payload, status, used = _collect(read_end, pid, wall_seconds)
    finally:
        os.close(read_end)
    if payload is None:
        raise AutotuneError(f"{what} did not finish within {wall_seconds} s; {expected}")
    ended = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if ended == signal.SIGXCPU or (ended == signal.SIGKILL and used >= cpu_seconds):  # soft, then hard CPU limit
        raise AutotuneError(f"{what} took over {cpu_seconds} s of CPU; {expected}")
    if ended and not payload:
        # Native code (libcst's parser, in Rust) aborts when an allocation fails under RLIMIT_AS; the kernel's
        # OOM killer sends SIGKILL.
        raise AutotuneError(f"{what} needed more than {memory_mib} MiB (it ended with "
                            f"{signal.Signals(ended).name}); {expected}")
    try:
        answer = json.loads(payload)
    except ValueError:
        raise AutotuneError(f"{what} ended without a result (exit status {status}); {expected}")
    if "value" in answer:
        return answer["value"]
    if answer.get("memory"):
        raise AutotuneError(f"{what} needed more than {memory_mib} MiB; {expected}")
    if answer.get("big"):
        raise AutotuneError(f"{what} produced {answer['big'] // 1024} KiB of code, more than {RESULT_MIB * 1024} KiB; "
                            f"{expected}")
    raise AutotuneError(answer["error"], answer.get("details"))


def _address_space():
    """This process's address space in bytes (Linux), or None where /proc is missing (no memory bound then)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _child(func, args, fd, cpu_seconds, memory_mib):
    code = 0
    try:
        faulthandler.disable()  # a child ended by a bound says so in the parent's one line, not in a dump
        held = _address_space()
        if held is not None:
            _lower(resource.RLIMIT_AS, held + memory_mib * 2**20, held + memory_mib * 2**20)
        _lower(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)
        try:
            answer = {"value": func(*args)}
        except MemoryError:
            answer = {"memory": True}
        except AutotuneError as exc:
            answer = {"error": str(exc), "details": exc.details}
        except Exception as exc:  # pylint: disable=broad-except  # said in one line by the parent
            answer = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        value = answer.get("value")
        if isinstance(value, str) and len(value) > RESULT_MIB * 2**20:
            answer = {"big": len(value)}
        payload = json.dumps(answer).encode()
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:  # pylint: disable=broad-except  # the parent reads "no result"
        code = 70
    finally:
        os._exit(code)  # no atexit, no flush of the parent's buffers


def _lower(kind, soft, hard):
    """Set a limit, never above one the operator already set (raising a hard limit is refused)."""
    _, current = resource.getrlimit(kind)
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(kind, (soft, hard))


def _collect(fd, pid, wall_seconds):
    """(payload, wait status, CPU seconds it used), or (None, None, None) when the child passed the deadline (it is
    killed)."""
    deadline = time.monotonic() + wall_seconds
    chunks = []
    while True:
        left = deadline - time.monotonic()
        ready = select.select([fd], [], [], max(0.0, left))[0] if left > 0 else []
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, None, None
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            break
        chunks.append(chunk)
    _, status, usage = os.wait4(pid, 0)
    return b"".join(chunks), status, usage.ru_utime + usage.ru_stime
