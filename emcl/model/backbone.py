"""The open_clip backbone: the bundled configs, weights by tag or local file, the device.

Pretrained weights come from an open_clip tag (downloaded; a fast reachability probe first, so an
offline machine gets a message that says how to pass a local file instead of a long hang) or a
local ``.safetensors`` file. Pickled weight files are refused: unpickling can run code.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import open_clip
import torch

from emcl.model.config import DEMO_BACKBONE

CONFIG_DIR = Path(__file__).with_name("configs")  # emcl/model/configs/*.json


class PretrainedUnavailable(RuntimeError):
    """Pretrained weights named by a tag could not be obtained (e.g. no network)."""


def register_backbones() -> None:
    """Make the bundled configs (``emcl/model/configs/*.json``) known to open_clip."""
    if open_clip.get_model_config(DEMO_BACKBONE) is None:
        open_clip.add_model_config(CONFIG_DIR)


def _host_reachable(host: str, timeout: float = 3.0) -> str | None:
    """``None`` if ``host:443`` accepts a connection, else the reason (fast offline check)."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return None
    except OSError as error:
        return str(error) or type(error).__name__


def _quiet_open_clip(record: logging.LogRecord) -> bool:
    """Drop open_clip's info/warning records (it logs on the root logger)."""
    return record.levelno >= logging.ERROR or "open_clip" not in record.pathname


def _offline_message(name: str, tag: str, reason: str) -> str:
    cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    source = cfg.get("hf_hub") or cfg.get("url") or "the open_clip model hub"
    return (
        f"Could not obtain the pretrained weights '{tag}' for {name} ({reason}). This machine "
        f"seems to have no internet access. Download the weights elsewhere (open_clip source: "
        f"{source}; e.g. open_clip_model.safetensors), copy the file here and pass the local "
        f"file instead of the tag: --pretrained /path/to/open_clip_model.safetensors "
        f"(ModelConfig(pretrained='/path/to/file.safetensors') in Python)."
    )


def _resolve_pretrained(name: str, pretrained: str) -> tuple[str, dict]:
    """The checkpoint argument for open_clip (a tag or a file path) and the tag's config."""
    path = Path(pretrained).expanduser()
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained in tags and not path.exists():
        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) or {}
        host = "huggingface.co" if tag_cfg.get("hf_hub") else "openaipublic.azureedge.net"
        reason = _host_reachable(host)
        if reason is not None:
            raise PretrainedUnavailable(_offline_message(name, pretrained, reason))
        return pretrained, tag_cfg
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(
                f"refusing to load {path}: only .safetensors weight files are accepted "
                f"(.pt/.pth/.bin are pickles, and unpickling can run code). Convert it once, "
                f'on a machine where you trust the file: python -c "import torch, '
                f"safetensors.torch as st; sd = torch.load('{path.name}', weights_only=True); "
                f"st.save_file(sd.get('state_dict', sd), 'weights.safetensors')\""
            )
        return str(path), {}
    raise ValueError(
        f"pretrained={pretrained!r} is neither a local .safetensors file nor a "
        f"pretrained tag of {name} (tags: {', '.join(tags) or 'none'})"
    )


def create_backbone(
    name: str, pretrained: str | None = None, quick_gelu: bool | None = None
) -> tuple[open_clip.CLIP, bool]:
    """An open_clip CLIP by config name, randomly initialised or from pretrained weights.

    ``pretrained``: ``None``, an open_clip tag, or a local ``.safetensors`` file (pickled
    ``.pt``/``.bin`` files are refused: unpickling can run code). Returns the model and the
    QuickGELU setting it was built with.
    """
    register_backbones()
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(open_clip.list_models())}")
    checkpoint, tag_cfg = None, {}
    if pretrained is not None:
        checkpoint, tag_cfg = _resolve_pretrained(name, pretrained)
    resolved_gelu = bool(
        quick_gelu
        if quick_gelu is not None
        else tag_cfg.get("quick_gelu", model_cfg.get("quick_gelu", False))
    )
    root = logging.getLogger()
    root.addFilter(_quiet_open_clip)  # "initialized randomly": misleading before a checkpoint load
    try:
        model = open_clip.create_model(
            name, pretrained=checkpoint, force_quick_gelu=resolved_gelu, pretrained_text=False
        )
    except RuntimeError as error:
        if checkpoint is not None and checkpoint == pretrained and "download" in str(error):
            raise PretrainedUnavailable(_offline_message(name, pretrained, str(error))) from error
        raise
    finally:
        root.removeFilter(_quiet_open_clip)
    if not isinstance(model, open_clip.CLIP):
        raise ValueError(f"backbone {name!r} is not a CLIP-style open_clip model")
    return model, resolved_gelu


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
    return device


__all__ = [
    "CONFIG_DIR",
    "PretrainedUnavailable",
    "create_backbone",
    "register_backbones",
    "resolve_device",
]
