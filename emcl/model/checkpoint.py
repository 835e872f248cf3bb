"""Checkpoints: a directory with ``model.safetensors`` + ``config.json``. Never pickle.

- Writes are atomic per file (``emcl.fileio.atomic_write``: temp file, fsync, rename); the
  config records the SHA-256 of the weights file, so a half-finished save, a truncated or
  swapped weights file is detected on load instead of giving silently wrong results
  (docs/reliability.md §3).
- Loading checks every key and shape against the architecture that ``config.json`` describes and
  names the first mismatch (key and both shapes); missing or unexpected keys are errors.
- Pickle payloads (``.pt``/``.pth``/``.bin``, zip or pickle magic bytes) are refused outright.

The same helpers store the optimizer state for resuming training (``save_tensors`` /
``load_tensors``): tensors in safetensors, everything else in JSON.

Storage precision: ``save_checkpoint(..., storage="float16")`` stores the floating tensors in
fp16 (half the size; the shipped and exported checkpoints) and records ``"storage"`` in
``config.json``; loading accepts either and casts into the model's fp32 parameters. Training
state for ``--resume`` stays fp32 so a resumed run continues exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from emcl.fileio import atomic_write
from emcl.model.config import ModelConfig
from emcl.model.model import EMCLRetrievalModel

FORMAT = "emcl-checkpoint/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".pt2")
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol >= 2; torch's zip format


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says why and what to do."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"refusing to load {path}: {path.suffix} files are PyTorch pickles, and unpickling "
            f"can run arbitrary code. EMCL checkpoints are a directory with {WEIGHTS} + {CONFIG} "
            f"(written by emcl.model.checkpoint.save_checkpoint / python -m emcl train)."
        )
    if path.is_file():
        with open(path, "rb") as handle:
            head = handle.read(4)
        if any(head.startswith(magic) for magic in _PICKLE_MAGIC):
            raise CheckpointError(
                f"refusing to load {path}: it is a pickle/torch.save payload, not safetensors "
                "(unpickling can run arbitrary code)"
            )


# --------------------------------------------------------------------------------------------
# Tensors + JSON (weights and training state)
# --------------------------------------------------------------------------------------------
def save_tensors(
    weights: str | os.PathLike,
    meta_path: str | os.PathLike,
    tensors: dict[str, Tensor],
    meta: dict[str, Any],
) -> None:
    """``tensors`` to a safetensors file and ``meta`` + the file's SHA-256 to JSON, atomically.

    The weights are replaced first: a crash between the two replaces leaves a hash mismatch
    that :func:`load_tensors` reports, never a silently mixed checkpoint.
    """
    payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    data = st_save(payload)
    record = {**meta, "weights_file": Path(weights).name, "weights_sha256": _sha256(data)}
    atomic_write(weights, data)
    atomic_write(meta_path, json.dumps(record, indent=2).encode() + b"\n")


def load_tensors(
    weights: str | os.PathLike, meta_path: str | os.PathLike
) -> tuple[dict[str, Tensor], dict]:
    """Read a safetensors file and its JSON record; verifies the recorded hash."""
    weights, meta_path = Path(weights), Path(meta_path)
    _refuse_pickle(weights)
    for needed in (weights, meta_path):
        if not needed.is_file():
            raise CheckpointError(f"checkpoint file missing: {needed}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{meta_path} is not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path} must hold a JSON object")
    data = weights.read_bytes()
    if not data:
        raise CheckpointError(f"{weights} is empty")
    expected = meta.get("weights_sha256")
    if expected is not None and _sha256(data) != expected:
        raise CheckpointError(
            f"{weights} does not match the SHA-256 recorded in {meta_path.name}: the file is "
            "truncated, modified or from another save (an interrupted save?). Re-save or re-train."
        )
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{weights} is not a readable safetensors file (truncated or corrupt: {error})"
        ) from None
    return tensors, meta


# --------------------------------------------------------------------------------------------
# Model checkpoints
# --------------------------------------------------------------------------------------------
def _stored(tensors: dict[str, Tensor], storage: str) -> dict[str, Tensor]:
    """Floating tensors cast to the storage dtype; integer buffers untouched."""
    if storage not in STORAGE_DTYPES:
        raise ValueError(f"storage must be one of {sorted(STORAGE_DTYPES)}, got {storage!r}")
    dtype = STORAGE_DTYPES[storage]
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def save_checkpoint(
    model: EMCLRetrievalModel,
    path: str | os.PathLike,
    extra: dict[str, Any] | None = None,
    storage: str = "float32",
) -> Path:
    """Save ``model`` (weights incl. the EMCL prior buffer, and its config) to directory ``path``.

    ``extra`` is stored in ``config.json`` under ``"info"`` (provenance, training summary);
    ``storage`` is ``"float32"`` or ``"float16"`` (the precision of the stored floating tensors).
    """
    path = Path(path)
    meta = {"format": FORMAT, "storage": storage, "model": model.config.to_dict(),
            "info": extra or {}}  # fmt: skip
    save_tensors(path / WEIGHTS, path / CONFIG, _stored(model.state_dict(), storage), meta)
    return path


def convert_checkpoint(
    source: str | os.PathLike, target: str | os.PathLike, storage: str = "float16"
) -> Path:
    """Re-store a checkpoint's weights at ``storage`` precision (same config and ``info``).

    ``target`` may equal ``source``: the weights are replaced first, then the config with the
    new hash (an interruption in between is detected on load, as for any save).
    """
    weights, config_path = _resolve(Path(source))
    tensors, meta = load_tensors(weights, config_path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{config_path}: unknown format {meta.get('format')!r}")
    target = Path(target)
    meta = {k: v for k, v in meta.items() if k not in ("weights_file", "weights_sha256")}
    meta["storage"] = storage
    save_tensors(target / WEIGHTS, target / CONFIG, _stored(tensors, storage), meta)
    return target


def _resolve(path: Path) -> tuple[Path, Path]:
    """(weights, config) for a checkpoint directory or its ``model.safetensors``."""
    _refuse_pickle(path)
    if path.is_dir():
        return path / WEIGHTS, path / CONFIG
    if path.suffix == ".safetensors":
        return path, path.with_name(CONFIG)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    raise CheckpointError(
        f"{path} is not an EMCL checkpoint: expected a directory with {WEIGHTS} + {CONFIG}"
    )


def read_config(path: str | os.PathLike) -> tuple[ModelConfig, dict]:
    """The model config and the ``info`` record of a checkpoint, without loading weights."""
    _, config_path = _resolve(Path(path))
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint file missing: {config_path}")
    try:
        meta = json.loads(config_path.read_text())
        return ModelConfig.from_dict(meta["model"]), meta.get("info", {})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"invalid {config_path}: {error}") from None


def check_state(expected: dict[str, Tensor], found: dict[str, Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming the first missing/unexpected key or wrong shape."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing:
        key = missing[0]
        raise CheckpointError(
            f"{source}: missing key '{key}' (the model expects shape {tuple(expected[key].shape)})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    if unexpected:
        key = unexpected[0]
        raise CheckpointError(
            f"{source}: unexpected key '{key}' with shape {tuple(found[key].shape)} "
            "(config.json describes a different architecture)"
        )
    for key, tensor in expected.items():
        if tuple(found[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: shape mismatch for '{key}': checkpoint has "
                f"{tuple(found[key].shape)}, the model from config.json expects "
                f"{tuple(tensor.shape)}"
            )


def _verified(path: str | os.PathLike) -> tuple[ModelConfig, dict, dict[str, Tensor], Path]:
    """(config, meta, tensors, weights file) of a checkpoint whose files pass every check that
    needs no model: no pickle, both files present, valid JSON, the format, the weights' SHA-256
    and a readable safetensors payload."""
    weights, config_path = _resolve(Path(path))
    if not weights.is_file() and weights.parent.is_dir():
        # A folder holding torch.save files instead: name the pickle, not a missing file.
        for found in sorted(weights.parent.iterdir()):
            if found.is_file() and found.suffix.lower() in PICKLE_SUFFIXES:
                _refuse_pickle(found)
    tensors, meta = load_tensors(weights, config_path)
    if meta.get("format") != FORMAT:
        found = meta.get("format")
        raise CheckpointError(f"{config_path}: unknown format {found!r}, expected {FORMAT}")
    try:
        config = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"invalid model config in {config_path}: {error}") from None
    return config, meta, tensors, weights


def check_checkpoint(path: str | os.PathLike) -> tuple[ModelConfig, dict]:
    """Every check :func:`load_checkpoint` makes (pickles, missing, truncated or modified
    files, the format, each key and shape) without keeping the model; returns the model config
    and the ``info`` record. Raises :class:`CheckpointError` with the reason."""
    config, meta, tensors, weights = _verified(path)
    model = EMCLRetrievalModel(config, load_pretrained=False)
    check_state(model.state_dict(), tensors, str(weights))
    info = meta.get("info", {})
    return config, info if isinstance(info, dict) else {}


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> EMCLRetrievalModel:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` strictly.

    Returns the model in eval mode on ``device``. Raises :class:`CheckpointError` with a clear
    message for pickles, missing/truncated/corrupt files and key or shape mismatches.
    """
    config, _, tensors, weights = _verified(path)
    model = EMCLRetrievalModel(config, load_pretrained=False)
    check_state(model.state_dict(), tensors, str(weights))
    model.load_state_dict(tensors, strict=True)  # copies cast fp16 storage to fp32
    return model.to(device).eval()


__all__ = [
    "CONFIG",
    "FORMAT",
    "STORAGE_DTYPES",
    "WEIGHTS",
    "CheckpointError",
    "check_checkpoint",
    "check_state",
    "convert_checkpoint",
    "load_checkpoint",
    "load_tensors",
    "read_config",
    "save_checkpoint",
    "save_tensors",
]
