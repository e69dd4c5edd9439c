"""Verified, resumable downloads: Clotho v2.1 and the PANNs checkpoints from Zenodo, and the files SPICE
needs (metrics.spice.download_spice fetches them with `fetch`).

A file is fetched into `<name>.part`, resumed with an HTTP Range request when a transfer is cut,
checked against its md5 and only then renamed to `<name>`; a file already present is kept
if its md5 matches and fetched again if not. So an interrupted or repeated
`audiocap download` does the least work that leaves every file verified.

Only the checksums pinned below are trusted: the record's metadata (`/api/records/<id>`) comes from the
same server as the files, so a hostile mirror could serve other files with matching metadata. The record
is read only to cross-check: a published md5 that differs from the pinned one is an error, as is a file
larger than its pinned bound. The base URL is `--base-url`, else `$AUDIOCAP_DOWNLOAD_BASE_URL`, else
https://zenodo.org (plain http only with `--allow-http`); a mirror serves `<base>/records/<id>/files/<name>`.
Every file is tried; the failures are reported together at the end. A full disk is one error line and leaves
no partial file; archives are extracted into a temporary folder first, and only if their content fits.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import py7zr
from tqdm import tqdm

from audiocap.errors import DownloadError

DEFAULT_BASE_URL = "https://zenodo.org"
BASE_URL_ENV = "AUDIOCAP_DOWNLOAD_BASE_URL"
CHUNK_BYTES = 1 << 20
GiB = 1 << 30
# Local write failures: not the network, so retrying or another mirror would not help.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
# An archive holds at most this many times its own size (audio compresses little; Clotho's ~1.1x).
MAX_EXTRACT_RATIO = 20


@dataclass(frozen=True)
class ZenodoRecord:
    record_id: int
    pinned_md5: dict[str, str]  # file name -> md5 as third-party manifests list it
    max_bytes: int = 8 * GiB  # no file of the record is larger: a server sending more is refused


TARGETS = {
    "clotho": ZenodoRecord(4783391, {
        "clotho_audio_development.7z": "c8b05bc7acdb13895bb3c6a29608667e",
        "clotho_audio_validation.7z": "7dba730be08bada48bd15dc4e668df59",
        "clotho_audio_evaluation.7z": "4569624ccadf96223f19cb59fe4f849f",
        "clotho_captions_development.csv": "d4090b39ce9f2491908eebf4d5b09bae",
        "clotho_captions_validation.csv": "5879e023032b22a2c930aaa0528bead4",
        "clotho_captions_evaluation.csv": "1b16b9e57cf7bdb7f13a13802aeb57e2",
        "clotho_metadata_development.csv": "170d20935ecfdf161ce1bb154118cda5",
        "clotho_metadata_validation.csv": "2e010427c56b1ce6008b0f03f41048ce",
        "clotho_metadata_evaluation.csv": "13946f054d4e1bf48079813aac61bf77",
    }),
    "panns-cnn10": ZenodoRecord(3987831, {"Cnn10_mAP=0.380.pth": "bfb1f1f9968938fa8ef4012b8471f5f6"}, 1 * GiB),
    "panns-cnn14": ZenodoRecord(3987831, {"Cnn14_mAP=0.431.pth": "541141fa2ee191a88f24a3219fff024e"}, 1 * GiB),
}


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file with a hashlib algorithm, or "git-sha1": the id git (and so the Hugging Face
    hub) gives a file it does not store in LFS, sha1 of "blob <size>\\0" + the bytes."""
    with open(path, "rb") as f:
        if algorithm != "git-sha1":
            return hashlib.file_digest(f, algorithm).hexdigest()
        digest = hashlib.sha1(f"blob {os.fstat(f.fileno()).st_size}\0".encode())
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
        return digest.hexdigest()


def md5sum(path: Path) -> str:
    return file_digest(path, "md5")


def fetch(url: str, dest: Path, checksum: str | None = None, progress: bool = True, attempts: int = 5,
          max_bytes: int | None = None, algorithm: str = "md5") -> Path:
    """Download `url` to `dest`, resuming cut transfers; a verified `dest` is not fetched again.

    `checksum` is the file's hex digest with `algorithm` (see file_digest); None fetches unverified. More than
    `max_bytes` is refused; a full disk leaves no partial file."""
    dest = Path(dest)
    if dest.exists():
        if checksum is None or file_digest(dest, algorithm) == checksum:
            return dest
        print(f"{dest}: {algorithm} does not match {checksum}; fetching it again", file=sys.stderr)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    restarted = False
    for attempt in range(attempts):
        try:
            _transfer(url, part, progress, max_bytes)
        except (OSError, http.client.HTTPException) as err:  # network trouble: resume on the next attempt
            problem = f"{type(err).__name__}: {err}"
            time.sleep(min(2**attempt - 1, 30))  # retry at once, then back off
            continue
        if checksum is None or (got := file_digest(part, algorithm)) == checksum:
            os.replace(part, dest)
            return dest
        part.unlink()  # resuming cannot repair corrupt bytes: start over, once
        if restarted:
            raise DownloadError(f"{url}: {algorithm} {got} twice in a row, expected {checksum}; the server holds "
                                "another file than the published one: check --base-url or the record")
        restarted, problem = True, f"{algorithm} {got}, expected {checksum}"
    raise DownloadError(
        f"{url}: download failed after {attempts} attempts ({problem}); "
        f"run the command again to resume, or try a mirror with --base-url / ${BASE_URL_ENV}"
    )


def _transfer(url: str, part: Path, progress: bool, max_bytes: int | None = None) -> None:
    """One HTTP request that appends to `part` from where it stops; raises if the transfer is cut."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "audiocap", **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416:  # nothing left past `offset`: the part is whole (its md5 will tell)
            return
        if err.code < 500:  # retrying will not help
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}; check the URL or --base-url") from None
        raise
    with response:
        if response.status != 206 or not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            offset = 0  # the server sent the whole file
        remaining = response.length  # None when the server does not say
        total = None if remaining is None else offset + remaining
        if max_bytes is not None and (total or 0) > max_bytes:
            raise DownloadError(f"{url}: the server announces {total} bytes, more than this file can be "
                                f"({max_bytes}); check --base-url")
        try:
            _receive(response, part, offset, total, progress, max_bytes, url)
        except OSError as err:
            if err.errno not in DISK_ERRORS:
                raise
            part.unlink(missing_ok=True)  # a full disk: free what was written, say so once, do not retry
            raise DownloadError(f"{part.parent}: cannot write the download ({err.strerror}); free space or "
                                "choose another --dest") from None


def _receive(response, part: Path, offset: int, total: int | None, progress: bool, max_bytes, url) -> None:
    received = 0
    with open(part, "ab" if offset else "wb") as f, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
        desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
    ) as bar:
        while chunk := response.read(CHUNK_BYTES):
            if max_bytes is not None and offset + received + len(chunk) > max_bytes:
                f.close()
                part.unlink()
                raise DownloadError(f"{url}: the server sends more than this file can be ({max_bytes} bytes); "
                                    "check --base-url")
            f.write(chunk)
            bar.update(len(chunk))
            received += len(chunk)
    if total is not None and offset + received < total:
        raise ConnectionError(f"transfer cut after {offset + received} of {total} bytes")


def record_checksums(base_url: str, record_id: int) -> dict[str, str]:
    """md5 of each file as the Zenodo record's metadata publishes it; {} if it cannot be read."""
    url = f"{base_url}/api/records/{record_id}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "audiocap"}), timeout=30) as r:
            files = json.loads(r.read(CHUNK_BYTES))["files"]
        return {f["key"]: f["checksum"].removeprefix("md5:") for f in files if f["checksum"].startswith("md5:")}
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError, AttributeError) as err:
        print(f"note: cannot read checksums from {url} ({err}); the pinned md5s are used", file=sys.stderr)
        return {}


def fetch_record(record: ZenodoRecord, dest: Path, base_url: str = DEFAULT_BASE_URL,
                 progress: bool = True) -> tuple[dict[str, Path], list[str]]:
    """Fetch every file of `record` into `dest`, each verified against its pinned md5: (verified paths, failures).
    One failure does not stop the others; each is printed as an `error:` line when it happens."""
    base_url = base_url.rstrip("/")
    published = record_checksums(base_url, record.record_id)
    paths, failures = {}, []
    for name, pinned in record.pinned_md5.items():
        url = f"{base_url}/records/{record.record_id}/files/{urllib.parse.quote(name, safe='=')}?download=1"
        try:
            if published.get(name, pinned) != pinned:  # the metadata comes from the same server as the files
                raise DownloadError(f"{name}: record {record.record_id} at {base_url} publishes md5 {published[name]}, "
                                    f"audiocap pins {pinned}: this is not the published file; check --base-url")
            paths[name] = fetch(url, dest / name, pinned, progress, max_bytes=record.max_bytes)
        except DownloadError as err:
            print(f"error: {err}", file=sys.stderr)
            failures.append(name)
    return paths, failures


def download_record(record: ZenodoRecord, dest: Path, base_url: str = DEFAULT_BASE_URL,
                    progress: bool = True) -> dict[str, Path]:
    """Fetch every file of `record` into `dest`, each verified against its pinned md5; DownloadError at the
    end naming every file that failed (the others are fetched and verified all the same)."""
    paths, failures = fetch_record(record, dest, base_url, progress)
    raise_failures(failures, len(record.pinned_md5))
    return paths


def raise_failures(failures: list[str], total: int) -> None:
    from audiocap.errors import first_few

    if failures:
        raise DownloadError(f"{len(failures)} of {total} files failed ({first_few(failures)}; why: above); "
                            "the others are verified; run the command again to retry them")


def extract_7z(archive: Path, into: Path) -> None:
    """Extract once: a marker naming the archive's size and mtime skips extraction on later runs
    (re-hashing gigabytes that `fetch` has just verified would double the time of a no-op run). The archive is
    extracted into a temporary folder, then moved into place: a failure (encrypted, too large for its size or
    the disk, a full disk) is one error and leaves no partial file."""
    marker = into / f".{archive.name}.extracted"
    stat = archive.stat()
    identity = f"{stat.st_size} {stat.st_mtime_ns}"
    if marker.exists() and marker.read_text() == identity:
        return
    into.mkdir(parents=True, exist_ok=True)
    staging = into / f".{archive.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with py7zr.SevenZipFile(archive, max_extract_size=_extract_limit(archive, into)) as z:
            _check_archive(archive, into, z)
            z.extractall(path=staging)
        _move_into(staging, into)
    except (py7zr.exceptions.ArchiveError, py7zr.exceptions.PasswordRequired, py7zr.exceptions.Bad7zFile,
            ValueError, EOFError) as err:
        raise DownloadError(f"{archive}: cannot extract ({err}); delete it and download again") from None
    except OSError as err:
        raise DownloadError(f"{into}: cannot extract {archive.name} ({err.strerror}); free space or choose "
                            "another --dest") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    marker.write_text(identity)  # written last: a killed extraction is redone


def _extract_limit(archive: Path, into: Path) -> int:
    return min(MAX_EXTRACT_RATIO * archive.stat().st_size, shutil.disk_usage(into).free)


def _check_archive(archive: Path, into: Path, z) -> None:
    """Refuse, before writing anything, an encrypted archive or one whose content does not fit."""
    if z.needs_password():
        raise DownloadError(f"{archive}: the archive is encrypted (password-protected); it is not the published "
                            "file: delete it and download again from the official record")
    size = sum(info.uncompressed for info in z.list() if not info.is_directory)
    if size > MAX_EXTRACT_RATIO * archive.stat().st_size:
        raise DownloadError(f"{archive}: would extract to {size} bytes, over {MAX_EXTRACT_RATIO}x its own size; "
                            "it is not the published file: delete it and download again")
    if size > (free := shutil.disk_usage(into).free):
        raise DownloadError(f"{into}: extracting {archive.name} needs {size} bytes, {free} are free; free space or "
                            "choose another --dest")


def _move_into(staging: Path, into: Path) -> None:
    """Move every extracted file from `staging` to the same place under `into`."""
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            target = into / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)


def download_clotho(dest: Path, base_url: str = DEFAULT_BASE_URL, progress: bool = True) -> None:
    """Clotho v2.1 in the layout `datasets.clotho` reads: CSVs in `dest`, audio in `dest/audio/<split>/`.
    Every verified archive is extracted, even when other files failed (reported together at the end)."""
    record = TARGETS["clotho"]
    paths, failures = fetch_record(record, dest, base_url, progress)
    for name, path in paths.items():
        if name.endswith(".7z"):  # each archive holds one folder named after its split
            try:
                extract_7z(path, dest / "audio")
            except DownloadError as err:
                print(f"error: {err}", file=sys.stderr)
                failures.append(name)
    raise_failures(failures, len(record.pinned_md5))
