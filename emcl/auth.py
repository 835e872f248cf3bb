"""Logins for a served app: a password file with salted scrypt hashes, and the check.

The file holds one user per line, ``name:scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``; blank lines
and lines starting with ``#`` are ignored. Passwords are never stored, only their scrypt
hashes (a 16-byte random salt per user). A login compares hashes in constant time and hashes
even for an unknown name, so the answer time does not say which names exist; failed attempts
per name are rate-limited (docs/reliability.md §2). The command line that edits the file is
``python -m emcl auth`` (emcl/cli/auth.py).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from emcl.fileio import atomic_write

SCHEME = "scrypt"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # 16 MiB and ~0.1 s per check on one core
SALT_BYTES, HASH_BYTES = 16, 32
MIN_PASSWORD_CHARS = 8
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MAX_FAILURES, FAILURE_WINDOW_S = 10, 60.0  # per user name
DEFAULT_FILE = Path("auth.txt")


class AuthFileError(ValueError):
    """The password file cannot be used; the message names the line and the reason."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` for ``password`` (a fresh random salt unless given)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"{SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 2**20, dklen=HASH_BYTES
    )


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` hashes to ``stored`` (compared in constant time)."""
    n, r, p, salt, digest = _parse_hash(stored)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), digest)


def _parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError(f"not a {SCHEME} hash (want {SCHEME}$n$r$p$salt$hash)")
    try:
        n, r, p = (int(v) for v in parts[1:4])
        salt, digest = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        raise ValueError("cost parameters must be integers and salt/hash hexadecimal") from None
    if n < 2**10 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16:
        raise ValueError(f"cost parameters out of range (n={n}, r={r}, p={p})")
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("salt or hash too short")
    return n, r, p, salt, digest


def read_auth_file(path: str | os.PathLike) -> dict[str, str]:
    """``{user: stored hash}`` from ``path``; a missing, empty or malformed file is refused
    with the line number and the reason (a server must not start with an unusable file)."""
    path = Path(path)
    if not path.is_file():
        raise AuthFileError(
            f"no password file at {path}: create one with `python -m emcl auth add USER "
            f"--file {path}`"
        )
    users: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        where = f"{path}, line {number}"
        if not sep or not NAME_PATTERN.fullmatch(name):
            raise AuthFileError(f"{where}: want `user:{SCHEME}$n$r$p$salt$hash`")
        if name in users:
            raise AuthFileError(f"{where}: user {name!r} appears twice")
        try:
            _parse_hash(stored)
        except ValueError as error:
            raise AuthFileError(f"{where}: {error}") from None
        users[name] = stored
    if not users:
        raise AuthFileError(f"{path} has no users: add one with `python -m emcl auth add USER`")
    return users


def write_auth_file(path: str | os.PathLike, users: dict[str, str]) -> None:
    """Write ``users`` atomically, readable by the owner only."""
    lines = ["# EMCL Explorer logins: user:scrypt$n$r$p$salt$hash (python -m emcl auth)"]
    lines += [f"{name}:{stored}" for name, stored in sorted(users.items())]
    atomic_write(path, "\n".join(lines) + "\n")
    os.chmod(path, 0o600)


@dataclass
class Logins:
    """The login check a server calls: ``logins(user, password) -> bool``."""

    users: dict[str, str]
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _dummy: str = field(default_factory=lambda: hash_password(secrets.token_hex(16)), repr=False)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Logins:
        return cls(read_auth_file(path))

    def __call__(self, user: str, password: str) -> bool:
        if not isinstance(user, str) or not isinstance(password, str):
            return False
        if self._throttled(user):
            return False
        # Hash for unknown names too: the time taken does not reveal which names exist.
        ok = verify_password(password, self.users.get(user, self._dummy)) and user in self.users
        if not ok:
            self._record_failure(user)
        return ok

    def _throttled(self, user: str) -> bool:
        with self._lock:
            recent = self._failures.get(user)
            if recent is None:
                return False
            while recent and self.clock() - recent[0] > FAILURE_WINDOW_S:
                recent.popleft()
            return len(recent) >= MAX_FAILURES

    def _record_failure(self, user: str) -> None:
        with self._lock:
            now, window = self.clock(), FAILURE_WINDOW_S
            if len(self._failures) > 10_000:  # bounded memory under a flood of made-up names
                stale = [n for n, d in self._failures.items() if not d or now - d[-1] > window]
                for name in stale:
                    del self._failures[name]
                if len(self._failures) > 10_000:
                    self._failures.clear()
            self._failures.setdefault(user, deque()).append(now)


__all__ = [
    "AuthFileError",
    "Logins",
    "hash_password",
    "read_auth_file",
    "verify_password",
    "write_auth_file",
]


if __name__ == "__main__":
    from emcl.cli import redirect

    redirect("auth", "emcl.auth")
