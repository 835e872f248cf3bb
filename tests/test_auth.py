"""Logins for a served app: the password file, the scrypt check, the throttle, the command
line (python -m emcl auth), the serving flags, and a launched app that asks for a login."""

from __future__ import annotations

import hashlib
import io
import socket
import stat
from collections import deque

import httpx
import pytest
from gradio_client import Client

from emcl import auth
from emcl.__main__ import main as emcl_main
from emcl.auth import AuthFileError, Logins, hash_password, read_auth_file, verify_password
from ui.flags import is_loopback, parse_args, serving_from


def test_hash_is_salted_scrypt_of_the_password():
    stored = hash_password("correct horse")
    scheme, n, r, p, salt, digest = stored.split("$")
    want = hashlib.scrypt(
        b"correct horse", salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32,
        maxmem=2**26,
    )  # fmt: skip
    assert scheme == "scrypt" and bytes.fromhex(digest) == want
    assert hash_password("correct horse") != stored  # a fresh salt each time
    assert "correct horse" not in stored


def test_verify_accepts_only_the_password():
    stored = hash_password("correct horse")
    assert verify_password("correct horse", stored)
    for wrong in ("correct hors", "Correct horse", "", "correct horse "):
        assert not verify_password(wrong, stored)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no users"),
        ("# only a comment\n\n", "no users"),
        ("alice\n", "line 1: want"),
        ("al ice:scrypt$16384$8$1$00$00\n", "line 1: want"),
        ("alice:bcrypt$xyz\n", "line 1: not a scrypt hash"),
        ("alice:scrypt$16384$8$1$zz$zz\n", "hexadecimal"),
        ("alice:scrypt$1000$8$1$" + "00" * 16 + "$" + "00" * 32 + "\n", "out of range"),
        ("alice:scrypt$16384$8$1$00$" + "00" * 32 + "\n", "too short"),
    ],
)
def test_malformed_files_are_refused_with_the_line(tmp_path, text, message):
    path = tmp_path / "auth.txt"
    path.write_text(text)
    with pytest.raises(AuthFileError, match=message):
        read_auth_file(path)


def test_missing_file_and_duplicate_users_are_refused(tmp_path):
    with pytest.raises(AuthFileError, match=r"python -m emcl auth add"):
        read_auth_file(tmp_path / "none.txt")
    line = f"alice:{hash_password('password1')}\n"
    (tmp_path / "dup.txt").write_text(line + "# x\n" + line)
    with pytest.raises(AuthFileError, match="line 3: user 'alice' appears twice"):
        read_auth_file(tmp_path / "dup.txt")


def test_logins_check_names_and_passwords():
    logins = Logins({"alice": hash_password("alice-password"), "bob": hash_password("bob-pw-99")})
    assert logins("alice", "alice-password") and logins("bob", "bob-pw-99")
    assert not logins("alice", "bob-pw-99")
    assert not logins("carol", "alice-password")  # unknown name
    assert not logins(None, "x")  # type: ignore[arg-type]


def test_failed_logins_are_throttled_per_name_then_forgiven():
    now = [0.0]
    logins = Logins({"alice": hash_password("alice-password")}, clock=lambda: now[0])
    logins._dummy = hash_password("unused-dummy")
    for _ in range(auth.MAX_FAILURES):
        assert not logins("alice", "guess")
    assert not logins("alice", "alice-password")  # throttled: even the right password
    assert logins._throttled("alice") and not logins._throttled("bob")
    now[0] += auth.FAILURE_WINDOW_S + 1
    assert logins("alice", "alice-password")


def test_a_flood_of_names_keeps_the_recent_failures():
    now = [0.0]
    logins = Logins({}, clock=lambda: now[0])
    logins._failures = {f"n{i}": deque([0.0]) for i in range(10_001)}  # all stale
    now[0] = auth.FAILURE_WINDOW_S + 1
    logins._failures["alice"] = deque([now[0]] * auth.MAX_FAILURES)
    logins._record_failure("bob")
    assert set(logins._failures) == {"alice", "bob"} and logins._throttled("alice")


def run_cli(monkeypatch, capsys, *argv: str, password: str | None = None) -> str:
    if password is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    assert emcl_main(["auth", *argv]) == 0
    return capsys.readouterr().out


def test_command_line_adds_changes_lists_and_removes_users(tmp_path, monkeypatch, capsys):
    path = tmp_path / "auth.txt"
    f = ["--file", str(path), "--password-stdin"]
    assert "added alice" in run_cli(monkeypatch, capsys, "add", "alice", *f, password="pass-one1")
    run_cli(monkeypatch, capsys, "add", "bob", *f, password="pass-two22")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "pass-one1" not in path.read_text()
    out = run_cli(monkeypatch, capsys, "add", "alice", *f, password="pass-three")
    assert "changed the password of alice" in out
    users = read_auth_file(path)
    assert verify_password("pass-three", users["alice"])
    assert not verify_password("pass-one1", users["alice"])
    assert run_cli(monkeypatch, capsys, "list", "--file", str(path)).split() == ["alice", "bob"]
    run_cli(monkeypatch, capsys, "remove", "bob", "--file", str(path))
    assert set(read_auth_file(path)) == {"alice"}
    with pytest.raises(SystemExit, match="at least"):
        run_cli(monkeypatch, capsys, "add", "carol", *f, password="short")
    with pytest.raises(SystemExit, match="user name"):
        run_cli(monkeypatch, capsys, "add", "../etc", *f, password="long-enough")
    assert set(read_auth_file(path)) == {"alice"}  # refusals change nothing


# ---- the serving flags ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("localhost", True), ("::1", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("myhost.example", False)],
)  # fmt: skip
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_beyond_loopback_needs_a_password_file_or_no_auth(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--host", "0.0.0.0"])
    assert "--auth-file PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--host", "0.0.0.0", "--no-auth", "--auth-file", "x"])
    assert serving_from(parse_args(["--host", "0.0.0.0", "--no-auth"])).logins is None
    with pytest.raises(SystemExit, match="no password file"):
        serving_from(parse_args(["--host", "0.0.0.0", "--auth-file", str(tmp_path / "no")]))
    path = tmp_path / "auth.txt"
    auth.write_auth_file(path, {"alice": hash_password("alice-password")})
    serving = serving_from(parse_args(["--host", "0.0.0.0", "--auth-file", str(path)]))
    assert serving.logins is not None and serving.logins("alice", "alice-password")
    assert serving.host == "0.0.0.0" and serving.uploads is None  # uploads off by default


def test_upload_flags_set_the_limits():
    serving = serving_from(
        parse_args(["--allow-uploads", "--upload-quota-mb", "7", "--upload-cap-mb", "70"])
    )
    assert serving.uploads is not None
    assert serving.uploads.per_user_bytes == 7 * 2**20
    assert serving.uploads.total_bytes == 70 * 2**20


# ---- a launched app with logins ------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded_app(explorer_inputs, explorer):
    from ui import app
    from ui.flags import Serving

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logins = Logins({"alice": hash_password("alice-password")})
    serving = Serving(port=port, logins=logins)
    demo = app.queued(app.build_demo(explorer, serving))
    _, url, _ = demo.launch(
        prevent_thread_lock=True, quiet=True, **app.launch_settings(
            explorer_inputs["setup"](), explorer, serving
        )
    )  # fmt: skip
    yield {"url": url, "explorer": explorer}
    demo.close()


RANK = {"beta": 4.0, "k": 7, "iters": 10, "lam": 0.1, "init": "reference", "top_k": 3}


def test_the_api_and_files_need_a_login(guarded_app):
    url = guarded_app["url"]
    body = {"data": ["a red circle", 4.0, 7, 10, 0.1, "reference", 3, "inference"]}
    assert httpx.post(f"{url}gradio_api/call/rank", json=body, timeout=10).status_code == 401
    video = guarded_app["explorer"].video_path(guarded_app["explorer"].snapshot.records[0].video_id)
    assert httpx.get(f"{url}gradio_api/file={video}", timeout=10).status_code in (401, 403)
    upload = httpx.post(
        f"{url}gradio_api/upload", files=[("files", ("a.mp4", b"x", "video/mp4"))], timeout=10
    )
    assert upload.status_code == 401
    wrong = httpx.post(f"{url}login", data={"username": "alice", "password": "nope"}, timeout=10)
    assert wrong.status_code == 400


def test_a_logged_in_client_ranks(guarded_app):
    client = Client(guarded_app["url"], auth=("alice", "alice-password"), verbose=False)
    result = client.predict(query="a red circle", **RANK, mode="inference", api_name="/rank")
    assert len(result["base"]) == 3
    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises its own error types
        Client(guarded_app["url"], auth=("alice", "wrong-password"), verbose=False)


def test_uploads_are_off_unless_allowed(guarded_app):
    url = guarded_app["url"]
    with httpx.Client(timeout=10) as http:
        login = {"username": "alice", "password": "alice-password"}
        assert http.post(f"{url}login", data=login).status_code == 200
        files = [("files", ("a.mp4", b"x" * 10, "video/mp4"))]
        assert http.post(f"{url}gradio_api/upload", files=files).status_code == 413
    client = Client(url, auth=("alice", "alice-password"), verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "/add_videos" not in endpoints and "/rank" in endpoints
