"""`sbert_sim`: Sentence-BERT similarity as aac-metrics 0.6.0 (and FENSE) computes it.

Per clip, the mean cosine similarity between the candidate's embedding and each reference's, with
sentence-transformers' paraphrase-TinyBERT-L6-v2 read from the metrics cache (`audiocap download fense`).
Candidates and references are encoded in separate calls, 32 sentences a batch, as aac-metrics does (a
sentence's batch changes its padding and so the last bits of its embedding).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from audiocap.errors import MetricError
from audiocap.metrics.fense_models import SBERT_REPO, model_folder

MODEL_NAME = SBERT_REPO
BATCH_SIZE = 32


def load_sentence_transformer(folder: Path, device: str = "cpu"):
    try:
        from sentence_transformers import SentenceTransformer  # optional extra; heavy import
    except ImportError as error:
        raise MetricError(f"sbert_sim, FER and FENSE need the optional extra: pip install 'audiocap[fense]' "
                          f"({error.name} is missing)") from None
    return SentenceTransformer(str(folder), device=device, local_files_only=True).eval().requires_grad_(False)


def load_sbert(cache: Path, device: str = "cpu"):
    """paraphrase-TinyBERT-L6-v2 from the metrics cache; nothing is downloaded."""
    return load_sentence_transformer(model_folder(cache, SBERT_REPO, "sbert_sim"), device)


def similarity(candidates: list[str], references: list[list[str]], model, batch_size: int = BATCH_SIZE):
    """(mean, per-clip) cosine similarity of each candidate's embedding to its references' embeddings."""
    def encode(sentences):
        return model.encode(sentences, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
                            show_progress_bar=False)

    with torch.inference_mode():
        candidate_embeddings = encode(candidates)
        reference_embeddings = encode([r for refs in references for r in refs])
    counts = [len(refs) for refs in references]
    clip = torch.repeat_interleave(torch.arange(len(candidates)), torch.tensor(counts))
    cosine = (candidate_embeddings[clip.to(candidate_embeddings.device)] * reference_embeddings).sum(-1).cpu().numpy()
    per_clip = np.bincount(clip.numpy(), weights=cosine, minlength=len(candidates)) / counts
    return float(per_clip.mean()), per_clip
