"""What a caption request brings: its options, its audio streamed to a temporary file, the audio decoded.

A request's audio is either the raw body (any content type but a form) or the `file` field of a
multipart/form-data body; options come as query parameters or form fields. The upload goes to a file the
server names (the client's file name is only shown back in messages), is cut off at the size limit, and
is decoded a piece at a time so that a long recording is refused once it passes the duration limit, before
it is all in memory.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from audiocap.audio import display_path, stream_audio
from audiocap.errors import AudioLoadError

MAX_BEAM_SIZE = 10  # a server answers many: a larger beam costs everyone for little (the default model peaks at 3-5)
MIN_SEGMENT_SECONDS = 2.0  # shorter windows say little, and a 0.01 s window would make a recording thousands of jobs
OPTION_NAMES = ("beam_size", "segment", "n_best")
FORM_FIELD_BYTES = 100  # an option's value is a short number


class RequestError(Exception):
    """A request the server refuses: its HTTP status and the message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class CaptionOptions:
    beam_size: int = 3
    segment: float | None = None  # seconds per window; None = one caption for the whole recording
    n_best: int = 1


def parse_options(query: dict[str, str], form: dict[str, str], max_segment: float) -> CaptionOptions:
    """Options from query parameters and form fields (one place each); 422 naming the field at fault."""
    unknown = sorted(set(query) - set(OPTION_NAMES))
    if unknown:
        raise RequestError(422, f"unknown parameter {unknown[0]!r}; the options are {', '.join(OPTION_NAMES)}")
    twice = sorted(set(query) & set(form))
    if twice:
        raise RequestError(422, f"{twice[0]} given both as a query parameter and as a form field; give it once")
    values = {**query, **form}
    beam_size = parse_number(values, "beam_size", int, 3, 1, MAX_BEAM_SIZE)
    n_best = parse_number(values, "n_best", int, 1, 1, beam_size)
    segment = None
    if values.get("segment", "") != "":
        segment = parse_number(values, "segment", float, None, MIN_SEGMENT_SECONDS, max_segment)
    return CaptionOptions(beam_size, segment, n_best)


def parse_number(values: dict[str, str], name: str, kind: type, default, low, high):
    text = values.get(name, "")
    if text == "":
        return default
    try:
        value = kind(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # NaN fails too
        what = "a whole number" if kind is int else "a number of seconds"
        raise RequestError(422, f"{name} must be {what} from {low:g} to {high:g}, not {text[:20]!r}")
    return value


async def receive_upload(request, file: BinaryIO, max_bytes: int) -> tuple[str, dict[str, str]]:
    """Stream the request's audio into `file`; the upload's name for messages and the form's option fields.
    413 past `max_bytes` of audio, 422 for an empty upload or a form without a `file` field."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes + 65536:  # refused before reading: room for a form's headers
        raise too_large(max_bytes)
    # Any other content type is the audio itself (curl --data-binary says x-www-form-urlencoded): decoding tells
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    form = MultipartForm(file, max_bytes, params.get(b"boundary")) if content_type == b"multipart/form-data" else None
    written = 0
    try:
        async for chunk in request.stream():
            if form is not None:
                form.write(chunk)
            else:
                written += len(chunk)
                if written > max_bytes:
                    raise too_large(max_bytes)
                file.write(chunk)
    except ClientDisconnect:  # nobody reads the answer; the status is for the log
        raise RequestError(400, "the client went away during the upload") from None
    if form is not None:
        form.finish()
        name, written = form.file_name, form.file_bytes
    else:
        name = "the request body"
    if written == 0:
        raise RequestError(422, f"{name}: the upload is empty (0 bytes); send an audio file")
    return name, ({} if form is None else form.fields)


def too_large(max_bytes: int) -> RequestError:
    return RequestError(413, f"the upload is larger than this server accepts ({max_bytes / 1e6:g} MB); "
                             "send a shorter or more compressed recording")


class MultipartForm:
    """A multipart/form-data body parsed as it streams: the `file` field's bytes go to `file`, the option
    fields are kept, any other field is refused."""

    def __init__(self, file: BinaryIO, max_bytes: int, boundary: bytes | None):
        if not boundary:
            raise RequestError(422, "multipart/form-data without a boundary; let the HTTP client build the form")
        self.file, self.max_bytes = file, max_bytes
        self.fields: dict[str, str] = {}
        self.file_name, self.file_bytes, self.has_file = "the upload", 0, False
        self.headers: dict[bytes, bytes] = {}
        self.header_field, self.header_value = b"", b""
        self.part: str | None = None  # the current part's field name
        self.value = b""
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self.part_begin, "on_header_field": self.header_field_data,
            "on_header_value": self.header_value_data, "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
            "on_part_end": self.part_end, "on_end": self.end,
        })
        self.ended = False

    def write(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except RequestError:
            raise
        except Exception as err:  # noqa: BLE001 - python-multipart's parse errors
            raise RequestError(422, f"malformed multipart/form-data body ({err})") from None

    def finish(self) -> None:
        if not self.ended:
            raise RequestError(422, "the multipart/form-data body ends early; the upload may have been cut off")
        if not self.has_file:
            raise RequestError(422, "the form has no `file` field; send the audio in a field named `file`")

    def part_begin(self) -> None:
        self.headers, self.part, self.value = {}, None, b""

    def header_field_data(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def header_value_data(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.header_field.strip().lower()] = self.header_value.strip()
        self.header_field, self.header_value = b"", b""

    def headers_finished(self) -> None:
        _, disposition = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if name == "file":
            if self.has_file:
                raise RequestError(422, "the form has two `file` fields; send one recording per request")
            self.has_file = True
            self.file_name = shown_name(disposition.get(b"filename", b""))
        elif name not in OPTION_NAMES:
            raise RequestError(422, f"unknown form field {name[:40]!r}; send the audio as `file` and options among "
                                    f"{', '.join(OPTION_NAMES)}")
        elif name in self.fields:
            raise RequestError(422, f"form field {name} given twice; give it once")
        self.part = name

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part == "file":
            self.file_bytes += end - start
            if self.file_bytes > self.max_bytes:
                raise too_large(self.max_bytes)
            self.file.write(data[start:end])
        else:
            self.value += data[start:end]
            if len(self.value) > FORM_FIELD_BYTES:
                raise RequestError(422, f"form field {self.part} is too long for an option value")

    def part_end(self) -> None:
        if self.part in OPTION_NAMES:
            self.fields[self.part] = self.value.decode("utf-8", "replace").strip()

    def end(self) -> None:
        self.ended = True


def shown_name(file_name: bytes) -> str:
    """The client's file name, only for messages: its last component, printable, at most 80 characters."""
    name = re.split(r"[/\\]", file_name.decode("utf-8", "replace"))[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "?", name)[:80]
    return repr(name) if name else "the upload"


def decode_upload(path: str, name: str, sample_rate: int, max_seconds: float, fix: str) -> np.ndarray:
    """The uploaded audio as a mono float32 waveform at `sample_rate`; 422 if it is not audio, is corrupt,
    holds no samples or lasts longer than `max_seconds` (decoding stops there; `fix` says what to do then)."""
    limit, pieces, n_samples = round(max_seconds * sample_rate), [], 0
    try:
        for piece in stream_audio(path, sample_rate, chunk_samples=10 * sample_rate):
            n_samples += len(piece)
            if n_samples > limit:
                raise RequestError(422, f"{name}: the recording is longer than {max_seconds:.0f} s; {fix}")
            pieces.append(piece)
    except AudioLoadError as err:  # its message names the temporary file: name the upload instead
        reason = str(err).removeprefix(f"{display_path(path)}: ")
        raise RequestError(422, f"{name}: {reason}") from None
    if n_samples == 0:
        raise RequestError(422, f"{name}: no audio samples in the file")
    return np.concatenate(pieces)
