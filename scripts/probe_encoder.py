"""How much of the held-out clips' classes a frozen encoder's frames tell apart: a linear probe (issue 16).

    python scripts/probe_encoder.py --data data/default --cache cache/features [--encoder aisfx]

A softmax-regression classifier is trained on the mean and the maximum of each single-source training
clip's frames (one copy per recording, no repeats) and names the class of each held-out single-source
clip of a trained class. Its accuracy bounds what a captioner on the same frozen frames can be expected
to name: when the captioner's source hit rate is already at the probe's accuracy, better recognition
needs other frames (another encoder, or fine-tuning one), not another decoder.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_default_model import single_source_classes  # noqa: E402

from audiocap.data.cache import FeatureCache  # noqa: E402
from audiocap.data.datasets import load_captions_csv  # noqa: E402
from audiocap.encoders import create_encoder  # noqa: E402


def clip_vectors(cache: FeatureCache, encoder, paths: list[Path]) -> np.ndarray:
    """(clips, 2·D): the mean and the maximum of each clip's frames."""
    entries = cache.fill(encoder, paths, progress=True)
    return np.stack([np.concatenate([f.mean(0), f.max(0)]) for f in (np.load(e) for e in entries)])


def train_probe(x: np.ndarray, labels: np.ndarray, n_classes: int, weight_decay: float, steps: int = 500):
    """Standardised inputs -> softmax regression, full batch L-BFGS with an L2 penalty."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    inputs, targets = torch.from_numpy((x - mean) / std).float(), torch.from_numpy(labels)
    layer = torch.nn.Linear(x.shape[1], n_classes)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(inputs), targets) + weight_decay * layer.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return lambda z: layer(torch.from_numpy((z - mean) / std).float()).argmax(1).numpy()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/default"))
    parser.add_argument("--cache", type=Path, default=Path("cache/features"), help="the feature cache to fill and read")
    parser.add_argument("--encoder", default="aisfx")
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sources", type=Path, default=Path("../shared/sources"), help="the source lists (*.tsv)")
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    args = parser.parse_args(argv)

    names = single_source_classes(args.shared, args.sources)
    train = [it for it in load_captions_csv(args.data / "train.csv", args.data / "audio" / "train") if it.key in names]
    with open(args.data / "heldout_sources.csv", newline="", encoding="utf-8") as f:
        held_classes = {row["file_name"]: row["classes"] for row in csv.DictReader(f) if row["kind"] == "single"}
    classes = sorted({names[it.key] for it in train})
    index = {c: i for i, c in enumerate(classes)}
    held = [it for it in load_captions_csv(args.data / "heldout.csv", args.data / "audio" / "heldout")
            if held_classes.get(it.key) in index]

    encoder = create_encoder(args.encoder).freeze()
    cache = FeatureCache(args.cache)
    x_train = clip_vectors(cache, encoder, [it.audio_path for it in train])
    x_held = clip_vectors(cache, encoder, [it.audio_path for it in held])
    y_train = np.array([index[names[it.key]] for it in train])
    y_held = np.array([index[held_classes[it.key]] for it in held])
    torch.manual_seed(0)
    predict = train_probe(x_train, y_train, len(classes), args.weight_decay)
    print(f"{args.encoder}: {len(train)} training clips of {len(classes)} classes; linear probe names the class of "
          f"{np.mean(predict(x_held) == y_held):.3f} of {len(held)} held-out single-source clips "
          f"(training accuracy {np.mean(predict(x_train) == y_train):.3f})")


if __name__ == "__main__":
    main()
