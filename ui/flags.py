"""The app's command-line flags: the :class:`Setup` (data and models) and the
:class:`Serving` (address, logins, uploads) they describe."""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from emcl import paths
from emcl.auth import AuthFileError, Logins
from emcl.explorer.device import DEVICES, check_device
from emcl.explorer.setup import Setup
from emcl.explorer.uploads import MIB, UploadLimits
from emcl.model.config import PRECISIONS

LOOPBACK = "127.0.0.1"
TRAIN_DISK_MB = 2048  # the runs trained from the page: about 40 demo runs
PRECISION_HELP = (
    "how the models encode videos and queries: auto (bf16 autocast on a GPU, fp32 on the CPU), "
    "bf16, fp16 or fp32 (GPU features equal to the CPU's, for parity)"
)


@dataclass(frozen=True)
class Serving:
    """How the app is served (docs/reliability.md §2): loopback, no logins and no uploads
    unless the flags say otherwise."""

    host: str = LOOPBACK
    port: int | None = 7860
    logins: Logins | None = None  # None: no login page
    uploads: UploadLimits | None = None  # None: uploads off
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    # Training from the page: the runs folder's disk budget in bytes, None when training is
    # off (beyond loopback it needs --allow-training and logins).
    training_disk_bytes: int | None = None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (a name other than
    ``localhost`` counts as reachable from outside)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="EMCL Explorer: base vs EMCL text-video retrieval")
    ap.add_argument(
        "--data",
        type=Path,
        help="MSR-VTT layout or a folder of videos (+ captions.csv/jsonl); default: the demo "
        "world, built on first run under --cache-dir",
    )
    ap.add_argument("--split", default="test", help="MSR-VTT split to index (default: test)")
    ap.add_argument(
        "--checkpoint",
        type=Path,
        help="jointly trained EMCL checkpoint (default: checkpoints/demo-emcl for the demo world)",
    )
    ap.add_argument(
        "--base-checkpoint",
        type=Path,
        help="base checkpoint (default: checkpoints/demo-base unless --model is given)",
    )
    ap.add_argument(
        "--model",
        help="open_clip backbone for a base model without a checkpoint, "
        "e.g. ViT-B-32 (zero-shot, mean-pooled frames)",
    )
    ap.add_argument("--pretrained", help="open_clip tag or local .safetensors for --model")
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"demo world, feature and map caches, uploads (default: ${paths.CACHE_ENV} or "
        "./.cache in the repository)",
    )
    ap.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="cpu, cuda (refused where torch sees no GPU) or auto (a GPU when there is one)",
    )
    ap.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    ap.add_argument(
        "--checkpoint-dir",
        type=Path,
        action="append",
        default=[],
        help="a folder of checkpoints offered in the Models tab's picker (repeatable)",
    )
    ap.add_argument(
        "--study",
        type=Path,
        action="append",
        default=[],
        help="a study run folder (python -m emcl study --out DIR) shown in the Study tab "
        "beside checkpoints/study.json (repeatable)",
    )
    ap.add_argument("--host", default=LOOPBACK, help="bind address (default: loopback only)")
    ap.add_argument("--port", type=int, default=7860)
    _team_flags(ap)
    args = ap.parse_args(argv)
    _refuse_contradictions(ap, args)
    return args


def _team_flags(ap: argparse.ArgumentParser) -> None:
    """The flags for serving beyond this machine: logins, uploads, training, HTTPS."""
    team = ap.add_argument_group(
        "serving beyond loopback",
        "a --host other than loopback needs --auth-file or an explicit --no-auth",
    )
    team.add_argument(
        "--auth-file",
        type=Path,
        help="logins (user:scrypt hash per line); create with `python -m emcl auth add USER "
        "--file PATH`",
    )
    team.add_argument("--no-auth", action="store_true", help="serve without a login page")
    team.add_argument(
        "--allow-uploads", action="store_true", help="let users add videos (off by default)"
    )
    team.add_argument(
        "--upload-quota-mb",
        type=int,
        default=UploadLimits.per_user_bytes // MIB,
        help="uploads per user, MiB (default %(default)s)",
    )
    team.add_argument(
        "--upload-cap-mb",
        type=int,
        default=UploadLimits.total_bytes // MIB,
        help="all uploads together, MiB (default %(default)s)",
    )
    team.add_argument(
        "--allow-training",
        action="store_true",
        help="let signed-in users train from the page beyond loopback (on by default on "
        "loopback; needs --auth-file)",
    )
    team.add_argument(
        "--train-disk-mb",
        type=int,
        default=TRAIN_DISK_MB,
        help="disk budget of the runs trained from the page, MiB (default %(default)s)",
    )
    team.add_argument("--ssl-certfile", type=Path, help="serve HTTPS with this certificate")
    team.add_argument("--ssl-keyfile", type=Path, help="the certificate's private key")


def _refuse_contradictions(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flags that parse but cannot be served: exit 2 with the reason (``ap.error``)."""
    if args.auth_file is not None and args.no_auth:
        ap.error("--auth-file and --no-auth contradict each other; pick one")
    if not is_loopback(args.host) and args.auth_file is None and not args.no_auth:
        ap.error(
            f"--host {args.host} serves beyond this machine: pass --auth-file PATH (create it "
            "with `python -m emcl auth add USER --file PATH`) or, knowingly, --no-auth"
        )
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        ap.error("--ssl-certfile and --ssl-keyfile go together")
    try:
        check_device(args.device)
    except ValueError as error:
        ap.error(str(error))  # exits 2 with the reason
    if args.upload_quota_mb < 0 or args.upload_cap_mb < 0:
        ap.error("upload limits must be >= 0 MiB")
    if args.train_disk_mb < 0:
        ap.error("--train-disk-mb must be >= 0 MiB")
    if args.allow_training and args.auth_file is None:
        ap.error(
            "--allow-training lets users start processes on this machine: it needs logins "
            "(--auth-file PATH)"
        )


def serving_from(args: argparse.Namespace) -> Serving:
    """The :class:`Serving` for parsed flags; an unusable password file stops the start-up
    with the reason (SystemExit)."""
    logins = None
    if args.auth_file is not None:
        try:
            logins = Logins.from_file(args.auth_file)
        except AuthFileError as error:
            raise SystemExit(f"--auth-file: {error}") from None
    uploads = None
    if args.allow_uploads:
        uploads = UploadLimits(
            per_user_bytes=args.upload_quota_mb * MIB, total_bytes=args.upload_cap_mb * MIB
        )
    training = is_loopback(args.host) or args.allow_training
    return Serving(
        host=args.host,
        port=args.port,
        logins=logins,
        uploads=uploads,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        training_disk_bytes=args.train_disk_mb * MIB if training else None,
    )


def setup_from(args: argparse.Namespace) -> Setup:
    base, emcl = args.base_checkpoint, args.checkpoint
    if args.model is None:
        base = base or paths.DEMO_BASE_CHECKPOINT
        default_emcl = paths.DEMO_EMCL_CHECKPOINT
        emcl = emcl or (default_emcl if args.data is None or default_emcl.exists() else None)
    return Setup(
        data=args.data,
        split=args.split,
        base_checkpoint=base,
        checkpoint=emcl,
        model=args.model,
        pretrained=args.pretrained,
        cache_dir=paths.cache_root(args.cache_dir),
        device=args.device,
        precision=args.precision,
        checkpoint_dirs=tuple(args.checkpoint_dir),
        study_dirs=tuple(args.study),
    )
