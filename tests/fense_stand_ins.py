"""Small stand-ins of FENSE's models, built from real Clotho captions, in the formats the real files have.

The real paraphrase-TinyBERT-L6-v2, bert-base-uncased and FENSE checkpoint cannot be downloaded here, so
a metrics cache is laid out as `audiocap download fense` lays it out, with models of the same
architectures (BERT encoders, a SentenceTransformer with mean pooling, the detector's checkpoint dict)
made tiny and randomly initialised with fixed seeds. The detector's "error" bias is set so that about
half of the given captions are flagged, so that FER is not trivially 0 or 1.
"""
from __future__ import annotations

import collections
import csv
import math
import re
from pathlib import Path

import torch

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# (hidden size, layers, attention heads, feed-forward size)
TINY = (32, 2, 2, 64)
BERT_BASE = (768, 12, 12, 3072)  # the real detector's encoder (bert-base-uncased)
TINYBERT_L6 = (768, 6, 12, 3072)  # the real SBERT model's encoder (paraphrase-TinyBERT-L6-v2)
CHECKPOINT = "echecker_clotho_audiocaps_base.ckpt"
SBERT = "sentence-transformers/paraphrase-TinyBERT-L6-v2"


def clotho_vocabulary(clotho_csv: Path, size: int = 1500) -> list[str]:
    """The most frequent lower-cased words and punctuation of real Clotho captions, plus BERT's specials."""
    counts = collections.Counter()
    with open(clotho_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for k in range(1, 6):
                counts.update(re.findall(r"\w+|[^\w\s]", row[f"caption_{k}"].lower()))
    return SPECIAL_TOKENS + [word for word, _ in counts.most_common(size)]


def stand_in_bert(folder: Path, vocabulary: list[str], seed: int, size: tuple[int, int, int, int] = TINY):
    """A BERT (by default 2 layers of 32) with its tokenizer, saved with save_pretrained (config.json,
    model.safetensors, vocab.txt, ...)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    hidden, layers, heads, feed_forward = size
    config = BertConfig(vocab_size=len(vocabulary), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=feed_forward, max_position_embeddings=128)
    model = BertModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def build_metrics_cache(cache: Path, clotho_csv: Path, flagged_captions: list[str], detector_size=TINY,
                        sbert_size=TINY) -> Path:
    """cache/ with the SBERT stand-in, the detector's base-model folder and its checkpoint; returns `cache`."""
    from sentence_transformers import SentenceTransformer, models

    vocabulary = clotho_vocabulary(clotho_csv)
    encoder, tokenizer = stand_in_bert(cache / "bert-base-uncased", vocabulary, seed=0, size=detector_size)
    torch.manual_seed(1)
    clf = torch.nn.Linear(encoder.config.hidden_size, 6)
    with torch.no_grad():  # move the "error" logit so that its median over the captions sits at p = 0.9
        batch = tokenizer([c.lower() for c in flagged_captions], padding="max_length", truncation=True,
                          max_length=64, return_tensors="pt")
        logits = clf(encoder(**batch).last_hidden_state[:, 0, :])[:, 5]
        clf.bias[5] += math.log(0.9 / 0.1) - logits.median()
    state_dict = collections.OrderedDict({f"encoder.{k}": v for k, v in encoder.state_dict().items()})
    # checkpoints saved with transformers < 4.31 hold this buffer; the real ones do
    state_dict["encoder.embeddings.position_ids"] = torch.arange(128).expand((1, -1))
    state_dict.update({f"clf.{k}": v for k, v in clf.state_dict().items()})
    torch.save({"model_type": "bert-base-uncased", "num_classes": 6, "state_dict": state_dict}, cache / CHECKPOINT)

    sbert_encoder, _ = stand_in_bert(cache / "sbert-base", vocabulary, seed=2, size=sbert_size)
    transformer = models.Transformer(str(cache / "sbert-base"), max_seq_length=128)
    pooling = models.Pooling(sbert_encoder.config.hidden_size, pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(cache / SBERT))
    return cache
