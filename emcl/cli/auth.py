"""Manage the logins of a served app: the password file that ``app.py --auth-file`` reads.

    python -m emcl auth add USER [--file auth.txt]      # asks for the password twice
    python -m emcl auth remove USER [--file auth.txt]
    python -m emcl auth list [--file auth.txt]

The file format and the check are emcl/auth.py (docs/reliability.md §2).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from emcl.auth import (
    DEFAULT_FILE,
    MIN_PASSWORD_CHARS,
    NAME_PATTERN,
    AuthFileError,
    hash_password,
    read_auth_file,
    write_auth_file,
)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m emcl auth", description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=["add", "remove", "list"])
    ap.add_argument("user", nargs="?")
    ap.add_argument("--file", type=Path, default=DEFAULT_FILE, help="default: ./auth.txt")
    ap.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    return ap


def _read_new_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise SystemExit("the two passwords differ; nothing changed")
    if len(password) < MIN_PASSWORD_CHARS:
        raise SystemExit(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    return password


def main(argv: list[str] | None = None) -> int:
    """Add, remove or list the users of ``--file``; a refusal exits with its reason."""
    args = parser().parse_args(argv)
    try:
        users = read_auth_file(args.file) if args.file.is_file() else {}
    except AuthFileError as error:
        raise SystemExit(str(error)) from None
    if args.command == "list":
        print("\n".join(sorted(users)) or f"no users in {args.file}")
        return 0
    if args.user is None or not NAME_PATTERN.fullmatch(args.user):
        raise SystemExit("give a user name of 1-64 letters, digits or _ . @ -")
    if args.command == "add":
        verb = "changed the password of" if args.user in users else "added"
        users[args.user] = hash_password(_read_new_password(args.password_stdin))
    else:
        if args.user not in users:
            raise SystemExit(f"no user {args.user!r} in {args.file}")
        del users[args.user]
        verb = "removed"
    write_auth_file(args.file, users)
    print(f"{verb} {args.user} in {args.file} ({len(users)} user(s))")
    return 0
