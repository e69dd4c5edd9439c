"""Errors meant to be read by users: each names the file/field at fault and the fix."""


def first_few(things, n: int = 10) -> str:
    """The first `n` of `things` for a message, "a, b, c and 7 more": one bad row per line would bury the fix."""
    things = list(things)
    return ", ".join(map(str, things[:n])) + (f" and {len(things) - n} more" if len(things) > n else "")


class AudiocapError(Exception):
    """Base class; the CLI prints these without a traceback."""


class AudioLoadError(AudiocapError):
    """An audio file could not be read or decoded."""


class CheckpointError(AudiocapError):
    """A model or encoder checkpoint is missing, truncated or of an unknown format."""


class DataError(AudiocapError):
    """A dataset CSV or its audio folder is inconsistent."""


class ConfigError(AudiocapError):
    """A training/evaluation config has an unknown or invalid key."""


class DownloadError(AudiocapError):
    """A download failed or did not match its checksum."""


class MetricError(AudiocapError):
    """A metric could not be computed (e.g. Java or a jar is missing)."""


def check_not_too_long(lengths: dict, limit: float, limit_name: str, fix: str, unit: str = "s") -> None:
    """DataError naming the clips whose length (`lengths`: name -> seconds, or frames with unit="frames")
    exceeds `limit`, longest first (`limit_name` says what the limit is, `fix` how to get under it): found
    before the long work (training, captioning a split) rather than in its middle."""
    too_long = sorted(((n, str(name)) for name, n in lengths.items() if n > limit), reverse=True)
    if too_long:
        listed = first_few((f"{name} ({n:.1f} s)" if unit == "s" else f"{name} ({n} {unit})"
                            for n, name in too_long), 3)
        raise DataError(f"{len(too_long)} clip(s) longer than {limit_name}: {listed}; {fix}")
