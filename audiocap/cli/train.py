"""`audiocap train CONFIG.yaml [key=value ...] [--resume]` (also under `torchrun ... -m audiocap train`)."""
from __future__ import annotations


def configure_train(parser) -> None:
    parser.add_argument("config", help="YAML file with TrainConfig keys (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. epochs=5")
    parser.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")


def run_train(args) -> int:
    from audiocap.config import load_config  # here: `audiocap train --help` does not load PyTorch
    from audiocap.train import TrainConfig, train

    train(load_config(TrainConfig, args.config, args.overrides), resume=args.resume)
    return 0
