"""`audiocap encoders` (list them) and `audiocap tag` (AudioSet tags of audio files with PANNs)."""
from __future__ import annotations

import argparse
import json
import sys

from audiocap.cli.args import positive_int


def configure_encoders(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print {name: description} as JSON")


def run_encoders(args: argparse.Namespace) -> int:
    from audiocap.encoders import list_encoders

    encoders = list_encoders()
    if args.json:
        print(json.dumps(encoders, indent=2))
    else:
        width = max(map(len, encoders))
        for name, description in encoders.items():
            print(f"{name:<{width}}  {description}")
    return 0


def configure_tag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3; any rate and channels)")
    parser.add_argument("--encoder", default="panns-cnn14", choices=["panns-cnn14", "panns-cnn10"])
    parser.add_argument("--checkpoint", required=True, help="official PANNs checkpoint, e.g. Cnn14_mAP=0.431.pth")
    parser.add_argument("--top-k", type=positive_int(), default=5, help="tags per file (default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line: {file, tags: [{label, probability}]}")


def run_tag(args: argparse.Namespace) -> int:
    import torch  # here: `audiocap encoders` answers without loading PyTorch

    from audiocap.audio import display_path
    from audiocap.encoders import create_encoder
    from audiocap.encoders.panns import audioset_labels
    from audiocap.errors import AudioLoadError

    encoder = create_encoder(args.encoder, checkpoint=args.checkpoint).eval()
    labels = audioset_labels()
    failures = 0
    for path in args.audio:
        try:
            frames = torch.from_numpy(encoder.encode_file(path, allow_empty=False))[None]  # (1, T, D), in chunks
        except AudioLoadError as err:  # report it and go on with the other files
            failures += 1
            print(f"error: {err}", file=sys.stderr)
            if args.json:
                print(json.dumps({"file": path, "error": str(err)}), flush=True)
            continue
        with torch.no_grad():
            probabilities = encoder.tag(frames, torch.tensor([frames.shape[1]]))[0]
        top = torch.topk(probabilities, min(args.top_k, len(labels)))
        tags = [{"label": labels[i], "probability": round(float(p), 4)} for p, i in zip(top.values, top.indices)]
        if args.json:
            print(json.dumps({"file": path, "tags": tags}), flush=True)
        else:
            print(display_path(path))  # a name that is not UTF-8 cannot be printed as it is
            for tag in tags:
                print(f"  {tag['probability']:.3f}  {tag['label']}")
    return 1 if failures else 0
