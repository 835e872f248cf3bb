"""Guarded decoding: every decode runs in a child process that may crash, hang or run away.

Every decode goes through :class:`DecoderPool` (``load_frames`` uses a shared default pool). A
pool owns persistent *child processes*: each has an address-space cap (RLIMIT_AS) and every
request a wall-clock timeout. A segfault, abort, hang or runaway allocation in FFmpeg/decord
therefore ends as a :class:`~emcl.video.errors.VideoDecodeError` in the caller, the dead child
is reaped and the next request gets a fresh one. Children are reused, so bulk decoding is not
dominated by process start-up (docs/reliability.md §1).

In the child each file is probed and checked first (:mod:`emcl.video.probe`); only then are the
sampled frames (:mod:`emcl.video.sampling`) decoded, small (resized in the decoder), with
decord (default) and PyAV as the fallback.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection

import numpy as np

from emcl.runtime import usable_cores
from emcl.video.errors import VideoDecodeError, as_decode_error, ffmpeg_reason
from emcl.video.probe import DEFAULT_LIMITS, Limits, ProbeInfo, Size, probe
from emcl.video.sampling import Sampler, fps_indices, output_size, uniform_indices

DEFAULT_TIMEOUT_S = 30.0


# ----------------------------------------------------------------------------- decoding (child)


@dataclass(frozen=True)
class DecodeRequest:
    """Everything a child needs to decode one file (picklable)."""

    path: str
    num_frames: int = 12
    size: Size = None
    sampler: Sampler = "uniform"
    backend: str = "auto"  # "auto" (decord, PyAV fallback) | "decord" | "pyav" | "module:function"
    limits: Limits = DEFAULT_LIMITS


@dataclass
class Decoded:
    """Sampled frames ``[T, H, W, 3]`` uint8 plus what happened while decoding them."""

    frames: np.ndarray
    indices: list[int]
    total_frames: int
    backend: str
    probe: ProbeInfo | None = None
    corrupt_frames: int = 0  # sampled slots filled from a neighbour because decoding stopped
    notes: list[str] = field(default_factory=list)


def _select(times: Sequence[float], req: DecodeRequest) -> list[int]:
    if req.sampler == "uniform":
        return uniform_indices(len(times), req.num_frames)
    if req.sampler == "fps":
        return fps_indices(times, req.num_frames)
    raise ValueError(f"unknown sampler {req.sampler!r}")


def decode_decord(req: DecodeRequest, info: ProbeInfo) -> Decoded:
    """decord backend: resize in the decoder, fetch only the sampled indices."""
    import decord

    h, w = output_size(info.height, info.width, req.size)
    try:
        vr = decord.VideoReader(req.path, ctx=decord.cpu(0), width=w, height=h, num_threads=1)
        n = len(vr)
        if n < 1 or n > 10**8:  # decord #88: INT64_MIN frame counts
            raise VideoDecodeError("no_frames", f"decord reports {n} frames", req.path)
        if req.sampler == "fps":
            times = vr.get_frame_timestamp(np.arange(n))[:, 0]
            times = (times - times[0]).tolist()
        else:
            times = [0.0] * n  # only the count matters
        idx = _select(times, req)
        uniq, inverse = np.unique(np.asarray(idx), return_inverse=True)
        frames = vr.get_batch(uniq.tolist()).asnumpy()[inverse]
        vr.seek(0)  # decord #197: releases decoder buffers
        del vr
    except decord.DECORDError as e:
        reason = ffmpeg_reason(str(e), default="corrupt")
        raise VideoDecodeError(reason, f"decord: {str(e)[:300]}", req.path) from e
    return Decoded(frames, list(map(int, idx)), n, "decord", info)


def decode_pyav(req: DecodeRequest, info: ProbeInfo) -> Decoded:
    """PyAV backend: one demux pass for the frame times, one decode pass for the frames."""
    import av

    h, w = output_size(info.height, info.width, req.size)
    opts = {"protocol_whitelist": "file"}
    try:
        with av.open(req.path, options=opts) as c:
            s = c.streams.video[0]
            pts = sorted(p.pts for p in c.demux(s) if p.pts is not None and p.size > 0)
            tb = float(s.time_base or 0) or 1.0
        if not pts:
            raise VideoDecodeError("no_frames", "no video packets", req.path)
        times = [(p - pts[0]) * tb for p in pts]
        idx = _select(times, req)
        wanted: dict[int, list[int]] = {}
        for slot, i in enumerate(idx):
            wanted.setdefault(i, []).append(slot)
        out: list[np.ndarray | None] = [None] * len(idx)
        last_needed = max(idx)
        k = -1
        errors = 0
        with av.open(req.path, options=opts) as c:
            s = c.streams.video[0]
            for packet in c.demux(s):  # decode packet by packet so one bad packet is skipped
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    errors += 1
                    continue
                for frame in frames:
                    k += 1
                    for slot in wanted.get(k, ()):
                        out[slot] = frame.to_ndarray(format="rgb24", width=w, height=h)
                if k >= last_needed:
                    break
    except av.FFmpegError as e:
        reason = ffmpeg_reason(str(e), default="corrupt")
        raise VideoDecodeError(reason, f"PyAV: {str(e)[:300]}", req.path) from e
    got = [i for i, f in enumerate(out) if f is not None]
    if not got:
        raise VideoDecodeError("no_frames", "no frame could be decoded", req.path)
    missing = len(out) - len(got)
    for slot in range(len(out)):  # fill from the nearest decoded slot
        if out[slot] is None:
            out[slot] = out[min(got, key=lambda g: abs(g - slot))]
    notes = [f"{missing} sampled frames missing, filled from neighbours"] if missing else []
    if errors:
        notes.append(f"{errors} packets failed to decode")
    return Decoded(np.stack(out), list(idx), len(pts), "pyav", info, missing, notes)


def _resolve_backend(name: str) -> Callable[[DecodeRequest, ProbeInfo], Decoded]:
    if name == "decord":
        return decode_decord
    if name == "pyav":
        return decode_pyav
    if ":" in name:  # extension point, e.g. "mypkg.decoders:torchcodec_decode" (or a test's)
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    raise ValueError(f"unknown backend {name!r}")


def _check_output(d: Decoded, req: DecodeRequest) -> None:
    f = d.frames
    h, w = output_size(d.probe.height, d.probe.width, req.size) if d.probe else f.shape[1:3]
    if f.dtype != np.uint8 or f.ndim != 4 or f.shape[3] != 3 or f.shape[1:3] != (h, w):
        raise VideoDecodeError("corrupt", f"decoder returned {f.dtype} {f.shape}", req.path)
    if len(f) != len(d.indices) or len(f) == 0:
        raise VideoDecodeError("corrupt", f"decoder returned {len(f)} frames", req.path)


def _is_blank(frames: np.ndarray) -> bool:
    return bool(frames.min() == frames.max())


def decode_request(req: DecodeRequest) -> Decoded:
    """Probe, check and decode one file in *this* process (the pool calls it in a child)."""
    info = probe(req.path, req.limits)
    if req.backend != "auto":
        d = _resolve_backend(req.backend)(req, info)
        _check_output(d, req)
        return d
    try:
        d = decode_decord(req, info)
        _check_output(d, req)
    except Exception as e:  # any decord failure: try the other backend before giving up
        first = as_decode_error(e, "decord", req.path)
        try:  # PyAV's FFmpeg is newer and tolerates some files decord rejects
            d = decode_pyav(req, info)
            _check_output(d, req)
        except VideoDecodeError:
            raise first from None
        d.notes.append(f"decord failed ({first.reason}); decoded with PyAV")
        return d
    if _is_blank(d.frames):  # decord #233 returns all-zero frames silently; cross-check
        try:
            alt = decode_pyav(req, info)
            if not _is_blank(alt.frames):
                alt.notes.append("decord returned blank frames; decoded with PyAV")
                return alt
        except VideoDecodeError:
            pass
    return d


def _child_entry() -> None:
    """Entry point of a decoder child started by :class:`_Worker`."""
    conn = Connection(int(os.environ["EMCL_DECODER_FD"]))
    _child_main(conn, int(os.environ["EMCL_DECODER_MEM"]), os.environ["EMCL_DECODER_QUIET"] == "1")


def _child_main(conn: Connection, memory_bytes: int, quiet: bool) -> None:
    """Decoder child: serve DecodeRequests until the pipe closes."""
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if quiet:  # decord dumps file bytes to stderr on some failures (decord #299)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    try:
        import av

        av.logging.set_level(None)
    except Exception:  # PyAV missing: decord-only child
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    conn.send(("ready", os.getpid()))
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        if req is None:
            return
        try:
            d = decode_request(req)
            if d.frames.nbytes > req.limits.max_output_bytes:
                raise VideoDecodeError("too_large", f"{d.frames.nbytes} bytes of frames", req.path)
            conn.send(("ok", d))
        except Exception as e:  # MemoryError included: too_large
            conn.send(("err", as_decode_error(e, "decoder", req.path)))


# ----------------------------------------------------------------------------- parent side


def _signal_name(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class _Worker:
    """One decoder child plus its pipe. Not thread-safe: the pool lends it to one caller.

    Started with ``subprocess`` (not multiprocessing's spawn, which re-imports the caller's
    ``__main__`` -- e.g. the whole app -- in every child); requests and results travel as
    pickles over a socketpair.
    """

    STARTUP_TIMEOUT_S = 120.0

    def __init__(self, memory_bytes: int, quiet: bool):
        parent_sock, child_sock = socket.socketpair()
        boot = (
            "import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
            "from emcl.video.decoder import _child_entry; _child_entry()"
        )
        env = dict(os.environ, EMCL_DECODER_FD=str(child_sock.fileno()),
                   EMCL_DECODER_MEM=str(memory_bytes), EMCL_DECODER_QUIET="1" if quiet else "0",
                   OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-c", boot, json.dumps(sys.path)],
            pass_fds=(child_sock.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        if not self.conn.poll(self.STARTUP_TIMEOUT_S):
            self.kill()
            raise VideoDecodeError("crashed", "decoder process did not start")
        try:
            self.conn.recv()
        except (EOFError, OSError) as e:
            code = self.kill()
            raise VideoDecodeError(
                "crashed", f"decoder process died at start ({_signal_name(code)})"
            ) from e

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.conn.close()
        return self.proc.returncode

    def close(self) -> None:
        try:
            self.conn.send(None)
            self.proc.wait(2)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def call(self, req: DecodeRequest, timeout: float) -> Decoded:
        self.conn.send(req)
        if not self.conn.poll(timeout):
            self.kill()
            raise VideoDecodeError(
                "timeout", f"no result within {timeout:g} s; decoder killed", req.path
            )
        try:
            status, payload = self.conn.recv()
        except (EOFError, OSError) as e:
            code = self.kill()
            raise VideoDecodeError(
                "crashed", f"decoder died ({_signal_name(code)})", req.path
            ) from e
        if status == "ok":
            return payload
        raise payload


class DecoderPool:
    """Up to ``workers`` persistent decoder children, each lent to one request at a time.

    Thread-safe. ``decode`` blocks until a child is free; the timeout counts from when the
    request is sent. A child that crashes or times out is discarded and replaced lazily.
    """

    def __init__(
        self,
        workers: int = 1,
        limits: Limits = DEFAULT_LIMITS,
        quiet: bool = True,
    ):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.max_workers = workers
        self.limits = limits
        self.quiet = quiet
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False

    def _borrow(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("DecoderPool is closed")
                while self._idle:
                    w = self._idle.pop()
                    if w.alive:
                        return w
                    w.kill()
                    self._count -= 1
                if self._count < self.max_workers:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            return _Worker(self.limits.memory_bytes, self.quiet)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _give_back(self, w: _Worker, ok: bool) -> None:
        with self._cond:
            self._cond.notify()
            if ok and w.alive and not self._closed:
                self._idle.append(w)
                return
            self._count -= 1
        w.close()  # outside the lock: waits briefly for the child to exit, then kills it

    def decode(
        self,
        path: str | os.PathLike,
        num_frames: int = 12,
        size: Size = None,
        sampler: Sampler = "uniform",
        timeout: float = DEFAULT_TIMEOUT_S,
        backend: str = "auto",
    ) -> Decoded:
        """Decode one file in a child; raises :class:`VideoDecodeError` on any failure."""
        if sampler not in ("uniform", "fps"):
            raise ValueError(f"sampler must be 'uniform' or 'fps', got {sampler!r}")
        if num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        output_size(1, 1, size)  # validates size
        path = os.fspath(path)
        if not os.path.exists(path):  # cheap and safe: no child needed
            raise VideoDecodeError("missing", path=path)
        req = DecodeRequest(path, num_frames, size, sampler, backend, self.limits)
        w = self._borrow()
        ok = False
        try:
            try:
                d = w.call(req, timeout)
            except (BrokenPipeError, ConnectionResetError):  # child died while idle: once more
                w.kill()
                w = _Worker(self.limits.memory_bytes, self.quiet)
                d = w.call(req, timeout)
            ok = True
            return d
        except VideoDecodeError as e:
            ok = w.alive and e.reason not in ("timeout", "crashed")
            if e.reason == "crashed" and backend == "auto":  # decord segfault: try PyAV once
                return self._retry_pyav(req, timeout, e)
            raise
        finally:
            self._give_back(w, ok)

    def _retry_pyav(self, req: DecodeRequest, timeout: float, first: VideoDecodeError) -> Decoded:
        w = self._borrow()
        ok = False
        try:
            d = w.call(replace(req, backend="pyav"), timeout)
            d.notes.append(f"decord child died ({first.message}); decoded with PyAV")
            ok = True
            return d
        except VideoDecodeError as e:
            ok = w.alive and e.reason not in ("timeout", "crashed")
            raise first from e
        finally:
            self._give_back(w, ok)

    def imap(
        self,
        paths: Iterable[str | os.PathLike],
        num_frames: int = 12,
        size: Size = None,
        sampler: Sampler = "uniform",
        timeout: float = DEFAULT_TIMEOUT_S,
        backend: str = "auto",
        ahead: int | None = None,
    ) -> Iterator[Decoded | VideoDecodeError]:
        """Decode many files with all children busy; yields results *in input order*.

        Failures are yielded as :class:`VideoDecodeError` objects, not raised. At most
        ``ahead`` results (default ``2 * workers``) are decoded ahead of the consumer, so a
        consumer that works on a batch (an encoder) keeps the children busy meanwhile.
        """

        def one(p: str | os.PathLike) -> Decoded | VideoDecodeError:
            try:
                return self.decode(p, num_frames, size, sampler, timeout, backend)
            except VideoDecodeError as e:
                return e

        window = max(ahead or 2 * self.max_workers, self.max_workers)
        with ThreadPoolExecutor(self.max_workers, thread_name_prefix="emcl-decode") as ex:
            pending: deque[Future] = deque()
            for p in paths:
                pending.append(ex.submit(one, p))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def child_pids(self) -> list[int]:
        """Process ids of the idle children (for monitoring and tests)."""
        with self._cond:
            return [w.proc.pid for w in self._idle if w.alive]

    def close(self) -> None:
        """Stop all idle children (busy ones are stopped when given back)."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for w in idle:
            w.close()

    def __enter__(self) -> DecoderPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def default_workers() -> int:
    """Decoder children for bulk decoding: one per CPU this process may run on."""
    return usable_cores()


_default_pool: DecoderPool | None = None
_default_lock = threading.Lock()


def default_pool() -> DecoderPool:
    """The process-wide pool behind :func:`load_frames` (2 children at most)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            _default_pool = DecoderPool(workers=min(2, os.cpu_count() or 1))
            atexit.register(_default_pool.close)
        return _default_pool


def load_frames(
    path: str | os.PathLike,
    num_frames: int = 12,
    size: Size = None,
    sampler: Sampler = "uniform",
    timeout: float = DEFAULT_TIMEOUT_S,
    backend: str = "auto",
) -> np.ndarray:
    """Sampled RGB frames ``[T, H, W, 3]`` uint8, decoded in an isolated child.

    ``size``: int short side (aspect kept) or ``(h, w)``; ``None`` keeps the file's size.
    ``sampler``: ``"uniform"`` (exactly ``num_frames``, see :func:`uniform_indices`) or ``"fps"``
    (1 frame/s, at most ``num_frames``). Raises :class:`VideoDecodeError` within ``timeout``.
    """
    return default_pool().decode(path, num_frames, size, sampler, timeout, backend).frames


def thumbnail(
    path: str | os.PathLike, size: Size = 160, timeout: float = DEFAULT_TIMEOUT_S
) -> np.ndarray:
    """The middle frame ``[H, W, 3]`` uint8 (short side ``size``), for the UI."""
    return load_frames(path, num_frames=1, size=size, timeout=timeout)[0]


__all__ = [
    "DEFAULT_TIMEOUT_S", "DecodeRequest", "Decoded", "DecoderPool", "decode_decord",
    "decode_pyav", "decode_request", "default_pool", "default_workers", "load_frames",
    "thumbnail",
]  # fmt: skip
