"""audiocap: automated audio captioning (Koh, Xue & Chng, ICASSP 2022).

    model = audiocap.load_model()            # the bundled default model
    model.caption(["dog.wav"], beam_size=3)  # -> list of captions
"""
__version__ = "0.1.0"


def load_model(path=None, device=None, precision="auto"):
    """Load a captioning model file (default: the model bundled with the package); see
    audiocap.transcribe.load_model for `precision`."""
    from audiocap.transcribe import load_model as _load

    return _load(path, device=device, precision=precision)
