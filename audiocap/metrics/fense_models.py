"""The model files of FENSE, FER and sbert_sim on disk, and `audiocap download fense` that puts them there.

Scoring never downloads: it reads a metrics cache folder (`--metrics-cache`, else $AUDIOCAP_METRICS_CACHE,
else ~/.cache/audiocap/metrics) laid out as

    sentence-transformers/paraphrase-TinyBERT-L6-v2/   the SBERT model of sbert_sim and FENSE
    bert-base-uncased/                                  config + tokenizer of the fluency-error detector
    echecker_clotho_audiocaps_base.ckpt                 the detector's weights (FENSE's release)

and a missing file is a MetricError naming it and the command that fetches it. The detector checkpoints
are verified against the sha256 that FENSE and aac-metrics pin. The Hugging Face files are verified
against the checksums the hub publishes for the commit it resolves (`/api/models/<repo>/revision/main`:
sha256 for files in LFS, git's blob id for the others), and no transfer may exceed the size it publishes
(nor MAX_HUB_FILE_BYTES); the commit is written to `<folder>/REVISION`. Their checksums are not pinned in
audiocap: the hub cannot be reached from where audiocap is built, and no copy of these models was at hand
to take them from.
"""
from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from audiocap.download import fetch
from audiocap.errors import DownloadError, MetricError

METRICS_CACHE_ENV = "AUDIOCAP_METRICS_CACHE"
DOWNLOAD_COMMAND = "audiocap download fense"
HUB_URL = "https://huggingface.co"

SBERT_REPO = "sentence-transformers/paraphrase-TinyBERT-L6-v2"
# What SentenceTransformer(folder) reads; the first three are required, the others used when present.
SBERT_FILES = ("modules.json", "config.json", "model.safetensors", "sentence_bert_config.json",
               "config_sentence_transformers.json", "1_Pooling/config.json", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# What the detector needs of its base model: the architecture and the tokenizer, not its weights
# (the checkpoint replaces them all).
TOKENIZER_FILES = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
REQUIRED = {SBERT_REPO: SBERT_FILES[:3], "bert-base-uncased": TOKENIZER_FILES[:2],
            "prajjwal1/bert-tiny": TOKENIZER_FILES[:2]}

# No file FENSE reads from the hub comes near this (paraphrase-TinyBERT-L6-v2's weights: ~0.27 GB), nor does a checkpoint.
MAX_HUB_FILE_BYTES = MAX_CHECKPOINT_BYTES = 1 << 30

DEFAULT_ECHECKER = "echecker_clotho_audiocaps_base"
# name -> (url, sha256, base model the checkpoint names as model_type), as aac-metrics 0.6.0 pins them.
ECHECKERS = {
    "echecker_clotho_audiocaps_base": (
        "https://github.com/blmoistawinde/fense/releases/download/V0.1/echecker_clotho_audiocaps_base.ckpt",
        "1a719f090af70614bbdb9f9437530b7e133c48cfa4a58d964de0d47fc974a2fa", "bert-base-uncased"),
    "echecker_clotho_audiocaps_tiny": (
        "https://github.com/blmoistawinde/fense/releases/download/V0.1/echecker_clotho_audiocaps_tiny.ckpt",
        "90ed0ac5033ec497ec66d4f68588053813e085671136dae312097c96c504f673", "prajjwal1/bert-tiny"),
}


def metrics_cache(folder: Path | None = None) -> Path:
    return Path(folder or os.environ.get(METRICS_CACHE_ENV) or Path.home() / ".cache" / "audiocap" / "metrics")


def _missing(path: Path, what: str) -> MetricError:
    return MetricError(f"{what} needs {path}, which is missing; run `{DOWNLOAD_COMMAND}` (or point --metrics-cache / "
                       f"${METRICS_CACHE_ENV} at a folder holding it)")


def model_folder(cache: Path, repo: str, what: str) -> Path:
    """`cache/<repo>` holding the files `repo` needs, or a MetricError naming the first missing one."""
    folder = Path(cache) / repo
    for name in REQUIRED[repo]:
        if not (folder / name).is_file():
            raise _missing(folder / name, what)
    return folder


def echecker_checkpoint(cache: Path, name: str = DEFAULT_ECHECKER) -> Path:
    path = Path(cache) / f"{name}.ckpt"
    if not path.is_file():
        raise _missing(path, "fer (the fluency-error detector of FENSE and SPIDEr-FL)")
    return path


def check_models(cache: Path, sbert: bool, echecker: bool) -> None:
    """Fail before any scoring (METEOR can take minutes) when a model file is missing."""
    if sbert:
        model_folder(cache, SBERT_REPO, "sbert_sim")
    if echecker:
        echecker_checkpoint(cache)
        model_folder(cache, ECHECKERS[DEFAULT_ECHECKER][2], "fer (the fluency-error detector of FENSE and SPIDEr-FL)")


def mirrored(url: str, base_url: str | None) -> str:
    """`url` on the mirror `base_url` (same path), or `url` itself."""
    return base_url.rstrip("/") + urllib.parse.urlsplit(url).path if base_url else url


def hub_checksums(repo: str, base_url: str | None) -> tuple[str, dict[str, tuple[str, str, int]]]:
    """(commit, file -> (algorithm, hex digest, most bytes it may have)) as the hub publishes them for the head of
    `repo`."""
    url = f"{mirrored(HUB_URL, base_url)}/api/models/{repo}/revision/main?blobs=true"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "audiocap"}), timeout=30) as r:
            info = json.load(r)
        files = {f["rfilename"]: (*(("sha256", f["lfs"]["sha256"]) if f.get("lfs") else ("git-sha1", f["blobId"])),
                                  min(int(f.get("size") or MAX_HUB_FILE_BYTES), MAX_HUB_FILE_BYTES))
                 for f in info["siblings"]}
        return info["sha"], files
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as err:
        raise DownloadError(f"{url}: cannot read the checksums of {repo} ({err}); nothing unverified is kept: "
                            "retry, or use a mirror with --base-url") from None


def download_hub_files(repo: str, names: tuple[str, ...], dest: Path, base_url: str | None, progress: bool) -> None:
    commit, published = hub_checksums(repo, base_url)
    if missing := [n for n in REQUIRED[repo] if n not in published]:
        raise DownloadError(f"{repo} at {commit} has no {', '.join(missing)}; it cannot be used as FENSE's model")
    folder = dest / repo
    for name in names:
        if name in published:
            algorithm, digest, max_bytes = published[name]
            url = f"{mirrored(HUB_URL, base_url)}/{repo}/resolve/{commit}/{urllib.parse.quote(name)}"
            fetch(url, folder / name, digest, progress, max_bytes=max_bytes, algorithm=algorithm)
    (folder / "REVISION").write_text(commit + "\n")


def download_fense(dest: Path, base_url: str | None = None, progress: bool = True) -> Path:
    """The SBERT model, the base-model config/tokenizer and the default error-detector checkpoint, verified."""
    dest = Path(dest)
    url, sha256, base_model = ECHECKERS[DEFAULT_ECHECKER]
    fetch(mirrored(url, base_url), dest / f"{DEFAULT_ECHECKER}.ckpt", sha256, progress, max_bytes=MAX_CHECKPOINT_BYTES,
          algorithm="sha256")
    download_hub_files(base_model, TOKENIZER_FILES, dest, base_url, progress)
    download_hub_files(SBERT_REPO, SBERT_FILES, dest, base_url, progress)
    return dest
