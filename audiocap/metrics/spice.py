"""SPICE (Anderson et al., 2016) through spice-1.0.jar, and the download of its jars (`audiocap download spice`).

SPICE parses captions into scene graphs with Stanford CoreNLP 3.6.0, whose two jars (~400 MB)
are not in the pycocoevalcap wheel; the toolkit fetches them at first use, from a URL that often
breaks. We never download behind the user's back: a missing jar raises a MetricError naming the
command (`audiocap download spice`) and the folder. We run without `-cache` (its LMDB cache
crashes on Java ≥ 16) and in a temporary directory, and never report a SPICE we did not compute.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiocap.download import fetch, file_digest
from audiocap.errors import DownloadError, MetricError
from audiocap.metrics.java import java_executable, pycocoevalcap_dir

CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
# The zip of CoreNLP 3.6.0 holding both jars; pycocoevalcap's get_stanford_models.py uses the same.
CORENLP_ZIP = "stanford-corenlp-full-2015-12-09.zip"
CORENLP_BASE_URL = "https://nlp.stanford.edu/software/"
# Its SHA-1 as a third-party installer pins it (DeepDive's CoreNLP setup): a mirror cannot substitute another zip.
CORENLP_ZIP_SHA1 = "55c9d653eb30ace7d5a60eb3138e424f9442e539"
MAX_ZIP_BYTES = 1 << 30  # each zip is under 400 MB
# spice-1.0.jar and its other libraries (lib/*.jar), as released by the SPICE authors.
SPICE_ZIP = "SPICE-1.0.zip"
SPICE_BASE_URL = "https://panderson.me/images/"
# Their sha256 as the pycocoevalcap 1.2 wheel ships them (its RECORD; the wheel is the file PyPI lists with
# sha256 083ed7910f1aec000b0a237ef6665f74edf19954204d0b1cbdb8399ed132228d). Nobody publishes a checksum of
# SPICE-1.0.zip: its jars are held to these, whichever way they came.
SPICE_JARS_SHA256 = {
    "spice-1.0.jar": "6c6a73ae6dd108667047c1818707590413934dcb9f1a62cef6469059b41b3d59",
    "lib/Meteor-1.5.jar": "014a3627d277a6f4ba5b44a20733f8dff28bbb428204c36abfda56565658ba09",
    "lib/SceneGraphParser-1.0.jar": "83a1b7c3f896dd135f9539ba41d65b155827dfc312893bfd5bb835c9f9ae310a",
    "lib/ejml-0.23.jar": "12d44e81fdd661ad2aac6384511facf3d8fa003c3ce8d9cec5f22827d1819a26",
    "lib/fst-2.47.jar": "8c871febc859cf72dbed1c6c1eebc5600c3d93c3e986feccf4623cc5086098cc",
    "lib/guava-19.0.jar": "58d4cc2e05ebb012bbac568b032f75623be1cb6fb096f3c60c72a86f7f057de4",
    "lib/hamcrest-core-1.3.jar": "66fdef91e9739348df7a096aa384a5685f4e875584cce89386a7a47251c4d8e9",
    "lib/jackson-core-2.5.3.jar": "c9a900c30c702d371be2d3714938dfa6de616599c8eb39f8e3cf7aedd62dfd32",
    "lib/javassist-3.19.0-GA.jar": "d19c1ef43ccd9cb1b39466bb2f1c8e45c2b6752f1e13a3dfb60096543d1791fa",
    "lib/json-simple-1.1.1.jar": "4e69696892b88b41c55d49ab2fdcc21eead92bf54acc588c0050596c3b75199c",
    "lib/junit-4.12.jar": "59721f0805e223d84b90677887d9ff567dc534d7c502ca903c0c2b17f05c116a",
    "lib/lmdbjni-0.4.6.jar": "f4e8c51eb4ef05abe57d2187e76f5c335e4ef16d8503329eb7dbc5ae7a90529c",
    "lib/lmdbjni-linux64-0.4.6.jar": "0b7773db873aaeec399a50113c0a4e121df0eff5e724607f7bc8171452107d94",
    "lib/lmdbjni-osx64-0.4.6.jar": "7d66778037b5689e7c6daf22a7140722f2085da4ae479bceda4a4be487d55460",
    "lib/lmdbjni-win64-0.4.6.jar": "969c6aa59893b82856a6832da640672b0f23f1d72f70d7b04296c71970d75b79",
    "lib/objenesis-2.4.jar": "090416e160a7e398f79e0149a7b05ef328b1843898a34e08c1cc170128d326d0",
    "lib/slf4j-api-1.7.12.jar": "0aee9a77a4940d72932b0d0d9557793f872e66a03f598e473f45e7efecdccf99",
    "lib/slf4j-simple-1.7.21.jar": "a20179cc3ded2d7e2f5def4ccb34b2d0836e2f8c9e79352a6babd6a6559cc8e0",
}


def default_spice_home() -> Path:
    return Path(os.environ.get("AUDIOCAP_SPICE_HOME", Path.home() / ".cache" / "audiocap" / "spice"))


@dataclass(frozen=True)
class SpiceOptions:
    home: Path | None = None  # folder with spice-1.0.jar and lib/; default $AUDIOCAP_SPICE_HOME or ~/.cache/audiocap/spice
    java: str | None = None
    max_memory: str = "8G"  # the toolkit's -Xmx


def _has_spice(folder: Path) -> bool:
    return (folder / "spice-1.0.jar").is_file() and all((folder / "lib" / jar).is_file() for jar in CORENLP_JARS)


def find_spice(home: Path | None = None) -> Path:
    """The folder holding spice-1.0.jar and lib/ with the CoreNLP jars, or a MetricError saying how to get it."""
    home = Path(home) if home else default_spice_home()
    package = pycocoevalcap_dir()
    for folder in filter(None, [home, package and package / "spice"]):
        if _has_spice(folder):
            return folder
    missing = [str(home / "lib" / jar) for jar in CORENLP_JARS if not (home / "lib" / jar).is_file()]
    if not (home / "spice-1.0.jar").is_file():
        missing.insert(0, str(home / "spice-1.0.jar"))
    raise MetricError(
        "SPICE needs spice-1.0.jar and the Stanford CoreNLP 3.6.0 jars, missing: " + ", ".join(missing) + ". "
        f"Run `audiocap download spice` (fetches {CORENLP_BASE_URL}{CORENLP_ZIP}, ~390 MB, and puts "
        f"{' and '.join(CORENLP_JARS)} into {home / 'lib'}), or copy them there by hand; "
        "set AUDIOCAP_SPICE_HOME to use another folder. No SPICE or SPIDEr was computed."
    )


def parse_spice_output(results: list[dict], image_ids: list[str]) -> np.ndarray:
    """Per-clip SPICE F-scores (`scores.All.f`) from the jar's JSON output, in the order of `image_ids`.

    SPICE writes NaN (or null) when a clip has no tuples; like the toolkit we keep it as NaN.
    """
    f_by_id = {}
    for item in results:
        value = item["scores"]["All"]["f"]
        f_by_id[str(item["image_id"])] = math.nan if value is None else float(value)
    missing = [i for i in image_ids if i not in f_by_id]
    if missing:
        raise MetricError(f"SPICE output has no score for {len(missing)} clips (first: {missing[0]})")
    return np.array([f_by_id[i] for i in image_ids])


def spice(candidates: list[str], references: list[list[str]], options: SpiceOptions = SpiceOptions()):
    """(mean SPICE, per-clip SPICE) of tokenized candidates against tokenized references."""
    folder = find_spice(options.home)
    java = java_executable(options.java)
    image_ids = [str(i) for i in range(len(candidates))]
    with tempfile.TemporaryDirectory(prefix="audiocap-spice-") as workdir:
        inputs, outputs = Path(workdir) / "input.json", Path(workdir) / "output.json"
        inputs.write_text(json.dumps([{"image_id": i, "test": c, "refs": r}
                                      for i, c, r in zip(image_ids, candidates, references)]))
        command = [java, f"-Xmx{options.max_memory}", "-jar", str(folder / "spice-1.0.jar"), str(inputs),
                   "-out", str(outputs), "-subset", "-silent"]
        run = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
        if run.returncode != 0 or not outputs.is_file():
            raise MetricError(f"SPICE failed (exit {run.returncode}): {run.stderr[-2000:]}")
        per_clip = parse_spice_output(json.loads(outputs.read_text()), image_ids)
    return float(np.mean(per_clip)), per_clip


def download_spice(dest: Path, base_url: str | None = None) -> Path:
    """Put spice-1.0.jar, its lib/ and the two CoreNLP 3.6.0 jars into `dest`; return `dest`.

    spice-1.0.jar and its small libraries are copied from the pycocoevalcap wheel when installed,
    else taken from SPICE-1.0.zip; either way they must match SPICE_JARS_SHA256. `base_url` replaces
    both official servers (a mirror holding the two zips under their official names).
    """
    dest = Path(dest)
    (dest / "lib").mkdir(parents=True, exist_ok=True)
    package = pycocoevalcap_dir()
    if not all((dest / name).is_file() for name in SPICE_JARS_SHA256):
        if package and (package / "spice" / "spice-1.0.jar").is_file():
            for name in SPICE_JARS_SHA256:
                shutil.copy2(package / "spice" / name, dest / name)
        else:
            archive = fetch((base_url or SPICE_BASE_URL).rstrip("/") + "/" + SPICE_ZIP, dest / SPICE_ZIP,
                            max_bytes=MAX_ZIP_BYTES)
            _extract(archive, {"spice-1.0.jar": dest}, lib_to=dest / "lib")
    check_spice_jars(dest)
    if not all((dest / "lib" / jar).is_file() for jar in CORENLP_JARS):
        archive = fetch((base_url or CORENLP_BASE_URL).rstrip("/") + "/" + CORENLP_ZIP, dest / CORENLP_ZIP,
                        CORENLP_ZIP_SHA1, max_bytes=MAX_ZIP_BYTES, algorithm="sha1")
        _extract(archive, {jar: dest / "lib" for jar in CORENLP_JARS})
    if not _has_spice(dest):
        raise MetricError(f"{dest} is still incomplete after the download; remove it and retry")
    return dest


def check_spice_jars(folder: Path) -> None:
    """spice-1.0.jar and lib/ against SPICE_JARS_SHA256; files that differ are deleted, and named in the error."""
    wrong = [name for name, sha256 in SPICE_JARS_SHA256.items()
             if not (folder / name).is_file() or file_digest(folder / name, "sha256") != sha256]
    for name in wrong:
        (folder / name).unlink(missing_ok=True)
    if wrong:
        raise DownloadError(f"{folder}: {len(wrong)} of SPICE's jars are missing or differ from those of pycocoevalcap "
                            f"1.2 (the checksums audiocap pins), e.g. {wrong[0]}; they were deleted. Run "
                            "`pip install pycocoevalcap==1.2`, then `audiocap download spice` again")


def _extract(archive: Path, wanted: dict[str, Path], lib_to: Path | None = None) -> None:
    """Extract members by base name into their folders (and, with `lib_to`, every lib/*.jar). Each member is
    written to a temporary file renamed into place, so a full disk leaves no truncated jar behind."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                name = Path(member).name
                folder = wanted.get(name) or (lib_to if lib_to and Path(member).parent.name == "lib"
                                              and name.endswith(".jar") else None)
                if folder is not None and name:
                    partial = folder / (name + ".partial")
                    try:
                        with zf.open(member) as source, open(partial, "wb") as target:
                            shutil.copyfileobj(source, target)
                        os.replace(partial, folder / name)
                    finally:
                        partial.unlink(missing_ok=True)
    except (zipfile.BadZipFile, RuntimeError) as err:  # RuntimeError: an encrypted member
        raise DownloadError(f"{archive}: cannot extract ({err}); delete it and download again") from None
    except OSError as err:
        raise DownloadError(f"{archive.parent}: cannot extract {archive.name} ({err.strerror}); free space or "
                            "choose another --dest") from None
    archive.unlink()
