"""`audiocap caption AUDIO_OR_DIR ...`: one caption per file (or per window with --segment), as text, csv or
json, printed as they come."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

from audiocap.cli.args import positive_int
from audiocap.options import MAX_BEAM_SIZE, PRECISIONS


def configure_caption(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="AUDIO_OR_DIR", help="audio files, or folders to search for them")
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--beam", type=positive_int(MAX_BEAM_SIZE), default=3,
                        help=f"beam size, 1 (greedy) to {MAX_BEAM_SIZE} (default: 3)")
    parser.add_argument("--batch-size", type=positive_int(), default=8, help="clips captioned together (default: 8)")
    parser.add_argument("--n-best", type=positive_int(MAX_BEAM_SIZE), default=1, metavar="K",
                        help="write the K best captions of each clip, best first (K at most --beam; csv: columns "
                        "caption_predicted_1..K, json: a list `captions`)")
    parser.add_argument("--segment", type=float, default=None, metavar="SECONDS",
                        help="caption each file in consecutive windows of SECONDS (for long recordings); "
                        "csv/json then give start and end times")
    parser.add_argument("--format", choices=("text", "json", "csv"), default="text",
                        help="text: `file: caption` lines; csv: DCASE `file_name,caption_predicted`; json: a list")
    parser.add_argument("--spreadsheet-safe", action="store_true",
                        help="csv: prefix a ' to cells starting with = + - @ (spreadsheets would run them as formulas)")
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

    if args.n_best > args.beam:  # before the model loads
        raise AudiocapError(f"--n-best {args.n_best} is more than --beam {args.beam}: beam search keeps {args.beam} "
                            f"captions per clip; raise --beam to at least {args.n_best} or lower --n-best")
    files, failed = find_audio_files(args.inputs)
    if not files:
        raise AudiocapError("no audio to caption; give audio files or folders that contain " + "/".join(AUDIO_EXTENSIONS))
    pipeline = load_model(args.model, args.device, args.precision)
    if args.segment is not None:
        pipeline.check_segment(args.segment)
    output = CaptionWriter(args.format, segments=args.segment is not None, n_best=args.n_best,
                           names=output_names(args.inputs, files), spreadsheet_safe=args.spreadsheet_safe)
    pending = []  # (path, start s, end s, waveform, last window of its file?) waiting for a batch
    progress = tqdm(total=len(files), unit="file", disable=len(files) < 2, file=sys.stderr)

    def caption_pending() -> None:
        results = pipeline.caption_waveform_results([entry[3] for entry in pending], args.beam, args.n_best)
        for (path, start, end, _, last), result in zip(pending, results):
            output.write(path, start, end, result)
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


def output_names(inputs: list[str], files: list[Path]) -> dict[Path, str]:
    """The file_name csv writes for each file: relative to the folder given that holds it (the DCASE names when
    captioning a dataset's folder), else as given; files whose names would collide keep the path as found."""
    from audiocap.audio import display_path

    folders = [Path(name) for name in inputs if Path(name).is_dir()]

    def name(path: Path) -> str:
        folder = next((f for f in folders if path.is_relative_to(f) and path != f), None)
        return display_path(path.relative_to(folder) if folder else path)

    names = {path: name(path) for path in files}
    counts = Counter(names.values())
    return {path: display_path(path) if counts[n] > 1 else n for path, n in names.items()}


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as a formula (OWASP CSV injection)


class CaptionWriter:
    """Prints captions as they come (text, csv) or at the end (json); with n_best > 1, the n best of each clip."""

    def __init__(self, fmt: str, segments: bool, n_best: int = 1, names: dict[Path, str] | None = None,
                 spreadsheet_safe: bool = False):
        self.format, self.segments, self.n_best, self.results = fmt, segments, n_best, []
        self.names, self.spreadsheet_safe = names or {}, spreadsheet_safe
        if fmt == "csv":
            times = ["start_seconds", "end_seconds"] if segments else []
            columns = [f"caption_predicted_{k}" for k in range(1, n_best + 1)] if n_best > 1 else ["caption_predicted"]
            print(",".join(["file_name", *times, *columns]), flush=True)

    def write(self, path: Path, start: float, end: float, result) -> None:
        """`result`: an audiocap.caption.CaptionResult."""
        from tqdm import tqdm

        from audiocap.audio import display_path

        if self.format == "json":  # json.dumps escapes any name (non-UTF-8 bytes too: os.fsencode gets them back)
            self.results.append({"file": str(path), **({"start": start, "end": end} if self.segments else {}),
                                 "caption": result.caption, "confidence": round(result.confidence, 6),
                                 **({"captions": result.alternatives} if self.n_best > 1 else {})})
        elif self.format == "csv":
            times = [f"{start:.2f}", f"{end:.2f}"] if self.segments else []
            tqdm.write(self.csv_row([self.csv_name(path), *times, *result.alternatives]), file=sys.stdout)
        else:  # one line per caption: control characters of a name (a newline...) are shown escaped
            name = re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], display_path(path))
            times = f" [{start:.1f}-{end:.1f} s]" if self.segments else ""
            for k, caption in enumerate(result.alternatives, 1):  # with n_best > 1: `name #k: caption`
                tqdm.write(f"{name}{times}{f' #{k}' if self.n_best > 1 else ''}: {caption}", file=sys.stdout)
        sys.stdout.flush()  # as they come, also through a pipe (`| tee`), and a closed pipe is noticed at once

    def csv_name(self, path: Path) -> str:
        """A name that is not UTF-8 cannot be written as it is in a UTF-8 CSV: its bytes are written as \\xNN
        escapes (the spelling `score` then needs in the references too), with a warning."""
        from audiocap.audio import display_path

        name = self.names.get(path) or display_path(path)
        if display_path(path) != str(path):  # equal for every UTF-8 name
            print(f"warning: {name}: file name is not UTF-8; written with \\xNN escapes", file=sys.stderr)
        return name

    def csv_row(self, cells: list[str]) -> str:
        """One CSV row without its line end. Quoting as for a "\\r\\n" terminator: a cell holding \\r or \\n
        is quoted (with "\\n" alone, a lone \\r went out unquoted and split the row for most readers)."""
        if self.spreadsheet_safe:
            cells = ["'" + cell if cell.startswith(FORMULA_STARTS) else cell for cell in cells]
        line = io.StringIO()
        csv.writer(line, lineterminator="\r\n").writerow(cells)
        return line.getvalue()[:-2]

    def close(self) -> None:
        if self.format == "json":
            print(json.dumps(self.results, indent=2))
