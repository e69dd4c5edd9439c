"""Fluency error rate (FER): FENSE's error detector (Zhou et al., ICASSP 2022) as aac-metrics 0.6.0 runs it.

A BERT encoder whose [CLS] state feeds a linear layer with one sigmoid per error class (add_tail,
repeat_event, repeat_adv, remove_conj, remove_verb, error); a caption has a fluency error when the last
class's probability exceeds 0.9. Captions are lower-cased and stripped of everything but word characters
and spaces, tokenized to at most 64 tokens and run 32 at a time, as aac-metrics does (padded to the
longest of a batch instead of to 64: see error_probabilities).

The checkpoint (FENSE's release) is a torch pickle of a plain dict {model_type, num_classes, state_dict};
it is read with `torch.load(weights_only=True)`, which rebuilds only tensors and plain containers, and its
fields are checked before use: a file holding anything else is refused, never executed.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audiocap.errors import MetricError
from audiocap.metrics.fense_models import DEFAULT_ECHECKER, ECHECKERS, echecker_checkpoint, model_folder

ERROR_NAMES = ("add_tail", "repeat_event", "repeat_adv", "remove_conj", "remove_verb", "error")
ERROR_THRESHOLD = 0.9
MAX_TOKENS = 64
BATCH_SIZE = 32


class FluencyErrorDetector(nn.Module):
    """aac-metrics' BERTFlatClassifier: the same layers under the same names, so its checkpoints load as they are."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(encoder.config.hidden_dropout_prob)
        self.clf = nn.Linear(encoder.config.hidden_size, num_classes)

    def forward(self, input_ids, attention_mask, token_type_ids):
        first_token = self.encoder(input_ids, attention_mask, token_type_ids).last_hidden_state[:, 0, :]
        return self.clf(self.dropout(first_token))


def read_checkpoint(path: Path) -> tuple[str, int, dict[str, torch.Tensor]]:
    """(model_type, num_classes, state_dict) of a FENSE error-detector checkpoint, checked."""
    try:
        states = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors have many types; any of them means "not such a checkpoint"
        raise MetricError(f"{path}: not a FENSE error-detector checkpoint ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); delete it and run `audiocap download fense`") from None
    bases = {base for _, _, base in ECHECKERS.values()}
    if not (isinstance(states, dict) and states.get("model_type") in bases and isinstance(states.get("num_classes"), int)
            and isinstance(states.get("state_dict"), dict)
            and all(isinstance(v, torch.Tensor) for v in states["state_dict"].values())):
        raise MetricError(f"{path}: not a FENSE error-detector checkpoint (expected a dict with model_type one of "
                          f"{sorted(bases)}, num_classes and a state_dict of tensors)")
    return states["model_type"], states["num_classes"], dict(states["state_dict"])


def load_error_detector(cache: Path, name: str = DEFAULT_ECHECKER, device: str = "cpu"):
    """(detector in eval mode, its tokenizer) from the metrics cache; nothing is downloaded."""
    try:
        from transformers import AutoConfig, AutoModel, AutoTokenizer  # optional extra; heavy import
    except ImportError as error:
        raise MetricError(f"FER, FENSE and SPIDEr-FL need the optional extra: pip install 'audiocap[fense]' "
                          f"({error.name} is missing)") from None
    model_type, num_classes, state_dict = read_checkpoint(echecker_checkpoint(cache, name))
    folder = model_folder(cache, model_type, "fer (the fluency-error detector of FENSE and SPIDEr-FL)")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)  # never the hub: the cache only
    detector = FluencyErrorDetector(AutoModel.from_config(config), num_classes)
    # transformers >= 4.31 keeps position_ids out of the state dict (aac-metrics drops it the same way)
    state_dict.pop("encoder.embeddings.position_ids", None)
    try:
        detector.load_state_dict(state_dict)
    except RuntimeError as err:
        raise MetricError(f"{folder}/config.json does not match the checkpoint's weights: "
                          f"{' '.join(str(err).split())[:300]}") from None
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return detector.eval().requires_grad_(False).to(device), tokenizer


def normalize(caption: str) -> str:
    """What the detector reads: lower case, word characters and spaces only (FENSE's preprocessing)."""
    return re.sub(r"[^\w\s]", "", caption).lower()


def error_probabilities(captions: list[str], detector: nn.Module, tokenizer, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """(len(captions), classes) sigmoid probabilities of each error class.

    aac-metrics pads every caption to 64 tokens; we run captions of similar length together and pad
    each batch to its longest. The padding is masked out of attention, so each caption's probabilities
    are the same up to float rounding (< 1e-6, tested), and captions of 10-20 words are no longer
    mostly padding."""
    device = next(detector.parameters()).device
    encoded = tokenizer([normalize(c) for c in captions], truncation=True, max_length=MAX_TOKENS)["input_ids"]
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    probabilities = np.zeros((len(captions), detector.clf.out_features), np.float32)
    with torch.inference_mode():
        for start in range(0, len(captions), batch_size):
            rows = order[start:start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
            logits = detector(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                              torch.zeros_like(batch["input_ids"]).to(device))
            probabilities[rows] = logits.sigmoid().cpu().numpy()
    return probabilities


def fer(captions: list[str], detector: nn.Module, tokenizer) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Corpus and per-caption scores under aac-metrics' names: `fer` (1.0 where an error is detected) and
    `fluency_error.<class>_prob`."""
    probabilities = error_probabilities(captions, detector, tokenizer)  # float32, compared as aac-metrics does
    per_clip = {f"fluency_error.{name}_prob": probabilities[:, i].astype(np.float64) for i, name in enumerate(ERROR_NAMES)}
    per_clip["fer"] = (probabilities[:, ERROR_NAMES.index("error")] > ERROR_THRESHOLD).astype(np.float64)
    return {name: float(values.mean()) for name, values in per_clip.items()}, per_clip
