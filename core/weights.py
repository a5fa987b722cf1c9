"""The weights file: one ``torch.save``d dict holding the architecture id, the feature parameters, the
decision threshold, the state_dict and free-form meta.

It is loaded with ``weights_only=True`` so a weights file can never run code, and written atomically so
a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.features import FeatureParams
from core.networks import ARCHITECTURES, build

WEIGHTS_FORMAT = 1  # bump when the weights dict layout changes; load_weights() refuses other versions


class ModelLoadError(Exception):
    """A weights file could not be turned into a working classifier."""


class ModelChecksumError(ModelLoadError):
    """The weights file's sha256 is not the one recorded for it."""


class ModelIncompatibleError(ModelLoadError):
    """Unknown format version or architecture, or a state_dict that does not fit the network."""


class ModelIOError(ModelLoadError):
    """The weights file is missing, unreadable or not a torch file."""


@dataclass(frozen=True)
class LoadedWeights:
    network: nn.Module
    architecture: str
    params: FeatureParams
    threshold: float
    meta: dict[str, Any]
    sha256: str


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_weights(
    path: str | Path,
    *,
    architecture: str,
    params: FeatureParams,
    threshold: float,
    state_dict: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> str:
    """Write a weights file atomically (temp file in the same folder + rename); return its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": WEIGHTS_FORMAT,
        "architecture": architecture,
        "features": params.to_dict(),
        "threshold": float(threshold),
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        # A JSON round trip keeps meta to plain types that weights_only loading accepts.
        "meta": json.loads(json.dumps(meta, default=str)),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; workers running as another user must read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_file(path)


def _read_payload(data: bytes) -> dict[str, Any]:
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for junk files
        raise ModelIOError(f"not a readable weights file: {exc}") from exc
    if not isinstance(payload, dict):
        raise ModelIncompatibleError("weights file does not hold a dict")
    return payload


def load_weights(path: str | Path, *, expected_sha256: str | None = None) -> LoadedWeights:
    """Read, verify and build the network of a weights file; raise a ModelLoadError subclass if it cannot."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelIOError(f"cannot read weights file {path}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ModelChecksumError(f"sha256 of {path} is {digest}, expected {expected_sha256}")
    payload = _read_payload(data)
    if payload.get("format") != WEIGHTS_FORMAT:
        raise ModelIncompatibleError(f"weights format {payload.get('format')!r}, need {WEIGHTS_FORMAT}")
    architecture = payload.get("architecture")
    if architecture not in ARCHITECTURES:
        raise ModelIncompatibleError(f"unknown architecture {architecture!r}")
    try:
        params = FeatureParams.from_dict(payload["features"])
        threshold = float(payload["threshold"])
        network = build(architecture, params)
        network.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelIncompatibleError(f"weights do not fit {architecture}: {exc}") from exc
    return LoadedWeights(
        network=network,
        architecture=architecture,
        params=params,
        threshold=threshold,
        meta=dict(payload.get("meta") or {}),
        sha256=digest,
    )
