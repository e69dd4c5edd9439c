"""audiocap: automated audio captioning (Koh, Xue & Chng, ICASSP 2022).

    model = audiocap.load_model()            # the bundled default model
    model.caption(["dog.wav"], beam_size=3)  # -> list of captions
"""
from audiocap.version import __version__  # noqa: F401


def load_model(path=None, device=None, precision="auto"):
    """Load a captioning model file (default: the model bundled with the package); see
    audiocap.caption.load_model for `precision`."""
    # imported here: `import audiocap` (and so `audiocap --help`) does not load PyTorch
    from audiocap.caption import load_model as _load

    return _load(path, device=device, precision=precision)
