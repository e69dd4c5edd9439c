"""The `audiocap` command: a thin dispatcher over the library.

Sub-command `X` lives in `audiocap.cli.<module>` (listed in COMMANDS), which defines `configure_X(parser)`
(adds the arguments) and `run_X(args) -> int`. Only the module of the command being run is imported, and
the library modules it needs only when the command runs, so that `audiocap --help` answers at once.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from audiocap.errors import AudiocapError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "caption": ("audiocap.cli.caption", "caption audio files or folders"),
    "evaluate": ("audiocap.cli.evaluate", "caption a dataset split and score it"),
    "train": ("audiocap.cli.train", "train a captioning model from a YAML config"),
    "score": ("audiocap.cli.score", "score predicted captions against references"),
    "download": ("audiocap.cli.download", "download datasets, checkpoints and SPICE jars"),
    "validate": ("audiocap.cli.validate", "check a captions CSV and its audio before training"),
    "encoders": ("audiocap.cli.encoders", "list the available audio encoders"),
    "tag": ("audiocap.cli.encoders", "AudioSet tags of audio files (PANNs)"),
    "serve": ("audiocap.cli.serve", "an HTTP API and web page for captioning (needs the serve extra)"),
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


if __name__ == "__main__":
    sys.exit(main())
