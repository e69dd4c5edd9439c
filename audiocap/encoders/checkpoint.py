"""Reading third-party checkpoints safely: `torch.load(weights_only=True)` with an allow-list of
exactly the non-tensor types each file format is known to hold, and errors that say what to do."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy._core.multiarray import _reconstruct, scalar
from torch import nn

from audiocap.errors import CheckpointError

# Files pickled under numpy 1.x name these `numpy.core.*`; numpy 2 moved them to `numpy._core`.
NUMPY_ARRAYS = [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"),
                np.ndarray, np.dtype, np.dtypes.Int64DType]
NUMPY_INT64_SCALARS = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, np.dtypes.Int64DType]


def load_checkpoint(path: str | Path, allowed_globals: list, fix: str) -> Any:
    """`torch.load(path, weights_only=True)` on CPU, allowing only `allowed_globals` beyond tensors.

    `fix` completes error messages (e.g. how to download the right file).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; {fix}")
    try:
        with torch.serialization.safe_globals(allowed_globals):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise CheckpointError(f"{path}: refusing to unpickle it ({reason}); it is not the expected "
                              f"checkpoint format. {fix}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path}: cannot read it ({err}); the file is truncated or corrupt. {fix}") from None


def load_state_dict_strict(module: nn.Module, state_dict: dict, path: str | Path, fix: str) -> None:
    """`module.load_state_dict(state_dict, strict=True)` with a readable CheckpointError."""
    ours = module.state_dict()
    missing = [k for k in ours if k not in state_dict]
    unexpected = [k for k in state_dict if k not in ours]
    wrong_shape = [f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}" for k, v in ours.items()
                   if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    problems = [f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong_shape)) if keys]
    if problems:
        raise CheckpointError(f"{path}: does not match {type(module).__name__} ({'; '.join(problems)}). {fix}")
    module.load_state_dict(state_dict, strict=True)
