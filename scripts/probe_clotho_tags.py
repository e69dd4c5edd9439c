"""How close AudioSet tags get to the Clotho clips' human captions (issue 16).

    python scripts/probe_clotho_tags.py --shared ../shared/data --sources ../shared/sources \
        --fixed-sentence "Motor, metal spinning, thud, birds chirping people talking."

YAMNet, trained on AudioSet's ~2M labelled clips, names the top AudioSet classes of each clip
(class scores averaged over the clip). The caption of the pool (AudioCaps train and Clotho
development captions, the same pool the best fixed sentence is drawn from) closest to those class
names (MiniLM) stands in for a captioner that knows every AudioSet class and writes as AudioCaps and
Clotho annotators do, without ever hearing a captioned recording of this kind. Its scores bound
what recognition of sound classes alone brings on these clips, next to the best fixed sentence and
one human caption against the other four.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_default_model import caption_pool, clotho_clips, human_leave_one_out, scores  # noqa: E402

from audiocap.audio import load_audio  # noqa: E402
from audiocap.encoders.tf_checkpoint import read_tf_checkpoint  # noqa: E402
from audiocap.encoders.yamnet import INSTALL_HINT, SAMPLE_RATE, TF_PREFIX, installed_saved_model, yamnet  # noqa: E402
from audiocap.metrics.minilm_sim import load_minilm  # noqa: E402

AUDIOSET_LAYER = 54  # YAMNet's 521-class layer in the SavedModel: the encoder reads the 54 before it


def audioset_head() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """YAMNet's AudioSet layer (kernel (1024, 521), bias (521,)) and its 521 class names."""
    saved_model = installed_saved_model()
    variables = read_tf_checkpoint(saved_model / "variables" / "variables", INSTALL_HINT)
    kernel, bias = (torch.tensor(np.asarray(variables[TF_PREFIX.format(AUDIOSET_LAYER, k)], dtype=np.float32))
                    for k in ("kernel", "bias"))
    with open(saved_model / "assets" / "yamnet_class_map.csv", newline="") as f:
        return kernel, bias, [row["display_name"] for row in csv.DictReader(f)]


def audioset_scores(waveforms: list[np.ndarray], kernel: torch.Tensor, bias: torch.Tensor) -> np.ndarray:
    """(clips, 521): YAMNet's AudioSet class scores (`audioset_head`'s layer) of each 16 kHz waveform's
    patches, averaged."""
    encoder = yamnet().eval()
    rows = []
    with torch.no_grad():
        for waveform in waveforms:
            frames, _ = encoder(torch.from_numpy(waveform)[None], torch.tensor([len(waveform)]))
            rows.append(torch.sigmoid(frames[0] @ kernel + bias).mean(0).numpy())
    return np.stack(rows)


def embed(texts: list[str], sentence_model) -> np.ndarray:
    return sentence_model.encode(texts, batch_size=256, normalize_embeddings=True, convert_to_numpy=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sources", type=Path, default=Path("../shared/sources"))
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--raw", type=Path, default=Path("data/default/raw"), help="where fetched clips are kept")
    parser.add_argument("--fixed-sentence", required=True, help="the best fixed sentence of evaluate_default_model.py")
    parser.add_argument("--top", type=int, nargs="+", default=[1, 3, 5], help="how many AudioSet classes to name")
    args = parser.parse_args(argv)

    clips = clotho_clips(args.shared, args.sources, args.mirrors, args.raw)
    references = [it.captions for it in clips]
    kernel, bias, names = audioset_head()
    class_scores = audioset_scores([load_audio(it.audio_path, SAMPLE_RATE) for it in clips], kernel, bias)
    sentence_model, pool = load_minilm(), caption_pool(args.shared)
    pool_vectors = embed(pool, sentence_model)
    fixed = [args.fixed_sentence] * len(clips)
    rows = {"one human caption against the other four": human_leave_one_out(references, sentence_model),
            f'best fixed sentence: "{args.fixed_sentence}"': scores(fixed, references, sentence_model)}
    for k in args.top:
        tags = [", ".join(names[i] for i in np.argsort(-s)[:k]) for s in class_scores]
        rows[f"top {k} AudioSet class names as the caption"] = scores(tags, references, sentence_model)
        nearest = [pool[i] for i in (embed(tags, sentence_model) @ pool_vectors.T).argmax(axis=1)]
        rows[f"top {k} AudioSet classes → nearest pool caption"] = scores(nearest, references, sentence_model)
    print(f"| on {len(clips)} Clotho validation clips | MiniLM | METEOR | CIDEr-D |\n|---|---|---|---|")
    for name, s in rows.items():
        print(f"| {name} | {s['minilm_sim']:.3f} | {s['meteor']:.3f} | {s['cider_d']:.3f} |")


if __name__ == "__main__":
    main()
