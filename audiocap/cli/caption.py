"""`audiocap caption AUDIO_OR_DIR ...`: one caption per file (or per window with --segment), as text, csv or
json, printed as they come."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from pathlib import Path

from audiocap.cli.args import positive_int
from audiocap.options import MAX_BEAM_SIZE, PRECISIONS


def configure_caption(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="AUDIO_OR_DIR", help="audio files, or folders to search for them")
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--beam", type=positive_int(MAX_BEAM_SIZE), default=3,
                        help=f"beam size, 1 (greedy) to {MAX_BEAM_SIZE} (default: 3)")
    parser.add_argument("--batch-size", type=positive_int(), default=8, help="clips captioned together (default: 8)")
    parser.add_argument("--segment", type=float, default=None, metavar="SECONDS",
                        help="caption each file in consecutive windows of SECONDS (for long recordings); "
                        "csv/json then give start and end times")
    parser.add_argument("--format", choices=("text", "json", "csv"), default="text",
                        help="text: `file: caption` lines; csv: DCASE `file_name,caption_predicted`; json: a list")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="decoder weights: auto = fp16 on CPU (same captions as fp32 on our held-out clips, "
                        "faster beam search), fp32 elsewhere; int8 = fastest for one clip at a time, "
                        "changes ~1 caption in 20 (see docs/BENCHMARKS.md)")


def run_caption(args) -> int:
    try:
        return caption_files(args)
    except BrokenPipeError:
        # The reader left early (`audiocap caption ... | head -1`): stop quietly like other Unix tools, with the
        # status a shell reports for a process ended by SIGPIPE (128 + 13). Python would otherwise print the
        # error again when it flushes stdout at exit, so stdout now goes to /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def caption_files(args) -> int:
    # Read by OpenMP when torch loads, so set before the first torch import: threads waiting for work sleep
    # instead of spinning. Spinning only pays off on cores nobody else uses; on a machine shared with a
    # training job the spinning threads took the CPU from the working ones.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from tqdm import tqdm

    from audiocap.audio import AUDIO_EXTENSIONS, find_audio_files
    from audiocap.caption import BATCH_AUDIO_SECONDS, load_model
    from audiocap.errors import AudiocapError

    files, failed = find_audio_files(args.inputs)
    if not files:
        raise AudiocapError("no audio to caption; give audio files or folders that contain " + "/".join(AUDIO_EXTENSIONS))
    pipeline = load_model(args.model, args.device, args.precision)
    if args.segment is not None:
        pipeline.check_segment(args.segment)
    output = CaptionWriter(args.format, segments=args.segment is not None)
    pending = []  # (path, start s, end s, waveform, last window of its file?) waiting for a batch
    progress = tqdm(total=len(files), unit="file", disable=len(files) < 2, file=sys.stderr)

    def caption_pending() -> None:
        captions = pipeline.caption_waveforms([entry[3] for entry in pending], args.beam)
        for (path, start, end, _, last), caption in zip(pending, captions):
            output.write(path, start, end, caption)
            progress.update(last)
        pending.clear()

    rate = pipeline.sample_rate
    batch_limit = BATCH_AUDIO_SECONDS * rate
    for path in files:
        try:  # a bad or too long file is reported and skipped; the others go on
            for a, b, waveform, last in file_windows(pipeline, path, args.segment):
                pending.append((path, a / rate, b / rate, waveform, last))
                if len(pending) >= args.batch_size or sum(len(entry[3]) for entry in pending) >= batch_limit:
                    caption_pending()
        except AudiocapError as err:
            tqdm.write(f"error: {err}", file=sys.stderr)
            failed += 1
            progress.update(1)
    if pending:
        caption_pending()
    progress.close()
    output.close()
    return 1 if failed else 0


def file_windows(pipeline, path: Path, segment_seconds: float | None):
    """(start, end, waveform, last?) of the windows `caption` captions: the whole file, or its segments (decoded a
    window at a time)."""
    if segment_seconds is not None:
        return pipeline.segment_windows(path, segment_seconds)
    waveform = pipeline.load(path)
    return [(0, len(waveform), waveform, True)]


class CaptionWriter:
    """Prints captions as they come (text, csv) or at the end (json)."""

    def __init__(self, fmt: str, segments: bool):
        self.format, self.segments, self.results = fmt, segments, []
        if fmt == "csv":
            times = ["start_seconds", "end_seconds"] if segments else []
            print(",".join(["file_name", *times, "caption_predicted"]), flush=True)

    def write(self, path: Path, start: float, end: float, caption: str) -> None:
        from tqdm import tqdm

        from audiocap.audio import display_path

        if self.format == "json":  # json.dumps escapes any name (non-UTF-8 bytes too: os.fsencode gets them back)
            self.results.append({"file": str(path), **({"start": start, "end": end} if self.segments else {}),
                                 "caption": caption})
        elif self.format == "csv":
            line = io.StringIO()
            times = [f"{start:.2f}", f"{end:.2f}"] if self.segments else []
            # csv quotes a field holding a character of the line terminator, so keep "\n" there (an empty one let a
            # name with a newline through unquoted) and cut it off: tqdm.write adds its own
            csv.writer(line, lineterminator="\n").writerow([display_path(path.name), *times, caption])
            tqdm.write(line.getvalue()[:-1], file=sys.stdout)
        else:  # one line per caption: control characters of a name (a newline...) are shown escaped
            name = re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], display_path(path))
            times = f" [{start:.1f}-{end:.1f} s]" if self.segments else ""
            tqdm.write(f"{name}{times}: {caption}", file=sys.stdout)
        sys.stdout.flush()  # as they come, also through a pipe (`| tee`), and a closed pipe is noticed at once

    def close(self) -> None:
        if self.format == "json":
            print(json.dumps(self.results, indent=2))
