"""`audiocap download TARGET`: datasets and checkpoints (audiocap.download), the SPICE jars
(audiocap.metrics.spice.download_spice) and FENSE's models (audiocap.metrics.fense_models.download_fense)."""
from __future__ import annotations

import argparse
import os
import urllib.parse
from pathlib import Path

from audiocap.cli.args import check_output_folder
from audiocap.download import BASE_URL_ENV, DEFAULT_BASE_URL, TARGETS, download_clotho, download_record
from audiocap.errors import DownloadError
from audiocap.metrics.fense_models import download_fense, metrics_cache  # numpy only: no PyTorch
from audiocap.metrics.spice import default_spice_home, download_spice


def configure_download(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=[*TARGETS, "spice", "fense"], help="what to download (fense: the models "
                        "of sbert_sim, FER, FENSE and SPIDEr-FL)")
    parser.add_argument("--dest", type=Path, help="destination folder (default: ~/.cache/audiocap/TARGET; "
                                                  "for spice, $AUDIOCAP_SPICE_HOME if set; for fense, "
                                                  "$AUDIOCAP_METRICS_CACHE, else ~/.cache/audiocap/metrics)")
    parser.add_argument("--base-url", help=f"mirror or proxy to download from (default: ${BASE_URL_ENV}, "
                                           f"else {DEFAULT_BASE_URL} for datasets and checkpoints)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--allow-http", action="store_true", help="accept a plain http:// base URL (the pinned "
                        "checksums still protect the files; the transfer itself is not private)")


def check_base_url(base_url: str, source: str, allow_http: bool = False) -> None:
    """An http(s) URL with a host (http only if `allow_http`); `source` names where it came from."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DownloadError(f"{source} {base_url!r} is not an http(s) URL; give the mirror's address, "
                            f"e.g. {DEFAULT_BASE_URL} or http://host:port/path")
    if parts.scheme == "http" and not allow_http:
        raise DownloadError(f"{source} {base_url!r} is plain http (anyone on the way can change what arrives); "
                            "use https, or pass --allow-http to accept it")


def run_download(args: argparse.Namespace) -> int:
    base_url = args.base_url or os.environ.get(BASE_URL_ENV)
    if base_url:
        check_base_url(base_url, "--base-url" if args.base_url else f"${BASE_URL_ENV}", args.allow_http)
    if args.target == "spice":  # jars come from their own hosts unless a mirror is given
        dest = args.dest or default_spice_home()
        check_output_folder(dest, "--dest")
        print(f"spice: installed in {download_spice(dest, base_url)}")  # its SPICE-1.0.zip has no pinned sum
        return 0
    if args.target == "fense":  # from the Hugging Face hub and FENSE's GitHub release unless a mirror is given
        dest = args.dest or metrics_cache()
        check_output_folder(dest, "--dest")
        dest = download_fense(dest, base_url, progress=not args.no_progress)
        if base_url:  # audiocap pins no checksum for the hub's files: the mirror's own published sums checked them
            print(f"fense: installed in {dest}; the detector checkpoint matches its pinned sha256, the Hugging Face "
                  f"files only the checksums {base_url} publishes for them (none is pinned)")
        else:
            print(f"fense: verified in {dest} (the checkpoint by its pinned sha256, the hub files by the hub's sums)")
        return 0
    dest = args.dest or Path("~/.cache/audiocap").expanduser() / args.target
    check_output_folder(dest, "--dest")
    base_url = base_url or DEFAULT_BASE_URL
    if args.target == "clotho":
        download_clotho(dest, base_url, progress=not args.no_progress)
    else:
        download_record(TARGETS[args.target], dest, base_url, progress=not args.no_progress)
    print(f"{args.target}: verified in {dest}")
    return 0
