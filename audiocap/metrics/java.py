"""Finding Java and the jars the Java metrics (METEOR, SPICE) need."""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from audiocap.errors import MetricError


def java_executable(java: str | None = None) -> str:
    """The `java` to run: the option, $AUDIOCAP_JAVA, $JAVA_HOME/bin/java, or java on PATH."""
    candidates = [java, os.environ.get("AUDIOCAP_JAVA")]
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    candidates.append("java")
    for candidate in filter(None, candidates):
        found = shutil.which(candidate)
        if found:
            return found
    raise MetricError(
        "Java was not found (needed by METEOR and SPICE; other metrics are unaffected). "
        "Install a Java runtime ≥ 8 (e.g. `apt install default-jre-headless`) or set AUDIOCAP_JAVA=/path/to/java."
    )


def pycocoevalcap_dir() -> Path | None:
    """The installed pycocoevalcap package folder, whose wheel ships meteor-1.5.jar and spice-1.0.jar."""
    spec = importlib.util.find_spec("pycocoevalcap")  # a namespace package: no __init__.py, no origin
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None
