"""Checkpoints that load without running code: tensors, numbers, strings, lists and dicts only.

``torch.load(..., weights_only=True)`` refuses anything else, so a checkpoint from an untrusted
source cannot execute code when it is opened.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from .atomic import atomic_path
from .errors import CheckpointError


def save_checkpoint(path: Path, *, unet, qam, training_networks=(None, None), optimizer, config: dict, classes: list[str], multilabel: bool,
                    image_channels: int, epoch: int, histories: dict[str, torch.Tensor],
                    mask_format: dict | None = None) -> None:
    """Write the networks, optimizer, options and histories to ``path`` atomically.

    ``histories`` is :meth:`maskaudit.history.TrainingHistory.state` (tensors only).
    ``unet`` and ``qam`` are the networks that score and predict (the weight average of training);
    ``training_networks`` (unet, qam) are the ones the optimizer steps, needed only to resume.
    ``mask_format`` is how the dataset stores its masks (:meth:`maskaudit.mask_format.MaskFormat.as_dict`),
    so that predictions are written the same way; checkpoints without it predate the record.
    """
    payload = {
        "format": "maskaudit-checkpoint-1",
        "unet": unet.state_dict(),
        "qam": qam.state_dict() if qam is not None else None,
        "training_networks": {name: network.state_dict() if network is not None else None
                              for name, network in zip(("unet", "qam"), training_networks)},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "config": config,
        "classes": list(classes),
        "multilabel": bool(multilabel),
        "image_channels": int(image_channels),
        "epoch": int(epoch),
        "histories": histories,
        "mask_format": mask_format,
    }
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by save_checkpoint onto the CPU, refusing anything that could run code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: give the model.pt of a finished or interrupted scan")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is not a maskaudit checkpoint or is damaged ({first_line})") from error
    if not isinstance(state, dict) or state.get("format") != "maskaudit-checkpoint-1":
        raise CheckpointError(f"{path} is not a maskaudit checkpoint")
    return state


def add_refit(path: Path, unet, info: dict) -> None:
    """Store a refitted U-Net (maskaudit.refit) beside the trained networks of the checkpoint at ``path``
    (key ``refit_unet``, what it was trained on under ``refit``); ``unet`` None removes a stored one.
    The trained networks, which scored the masks and which --resume continues, are left as they are."""
    state = load_checkpoint(path)
    if unet is None and state.get("refit_unet") is None:
        return  # nothing to remove: the file is not written again
    state["refit_unet"] = unet.state_dict() if unet is not None else None
    state["refit"] = info if unet is not None else None
    with atomic_path(path) as temporary:
        torch.save(state, temporary)
