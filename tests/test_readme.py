"""README.md's first command prints the captions README.md shows, exactly (read from README.md, so that a
new bundled model and its README lines change together)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_captions() -> list[str]:
    """The indented `examples/...: caption` lines under "The first command prints"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text[text.index("The first command prints"):]
    block = re.search(r"\n\n((?: {4}\S.*\n)+)", after).group(1)
    return [line[4:] for line in block.splitlines()]


def test_readme_lists_one_caption_per_example():
    lines = readme_captions()
    examples = sorted(p.name for p in (ROOT / "examples").iterdir() if p.suffix == ".flac")
    assert [line.split(": ", 1)[0] for line in lines] == [f"examples/{name}" for name in examples]
    assert all(line.split(": ", 1)[1].strip() for line in lines)


def test_readme_command_1_prints_the_readme_captions():
    run = subprocess.run([sys.executable, "-m", "audiocap", "caption", "examples/"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == readme_captions()
