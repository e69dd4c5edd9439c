"""The `audiocap` command: a thin dispatcher.

Each sub-command lives in the module that owns its stage of the pipeline; that module
defines `configure_<name>(parser)` (adds the arguments) and `run_<name>(args) -> int`.
Modules are imported lazily so that `audiocap --help` and cold starts stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "caption": ("audiocap.transcribe", "caption audio files or folders"),
    "evaluate": ("audiocap.evaluate", "caption a dataset split and score it"),
    "train": ("audiocap.train", "train a captioning model from a YAML config"),
    "score": ("audiocap.metrics.cli", "score predicted captions against references"),
    "download": ("audiocap.data.download", "download datasets, checkpoints and SPICE jars"),
    "validate": ("audiocap.data.validate", "check a captions CSV and its audio before training"),
    "encoders": ("audiocap.encoders.cli", "list the available audio encoders"),
    "tag": ("audiocap.encoders.cli", "AudioSet tags of audio files (PANNs)"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiocap", description="Automated audio captioning.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # only import the module of the command actually run
            getattr(importlib.import_module(module_name), f"configure_{name}")(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(getattr(module, f"run_{args.command}")(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except AudiocapError as err:  # our errors are meant for users: no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


from audiocap.errors import AudiocapError  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())


def positive_int(maximum: int | None = None):
    """An argparse `type` for counts (beam size, batch size, workers, top-k): a whole number from 1 to
    `maximum`, so that a bad value fails with the option's name before any model or data loads."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < 1 or (maximum is not None and value > maximum):
            limit = f"from 1 to {maximum}" if maximum is not None else "of at least 1"
            raise argparse.ArgumentTypeError(f"expected a whole number {limit}, not {text!r}")
        return value

    return parse
