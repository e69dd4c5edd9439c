"""Choices and limits the user sets, in a module without dependencies: the command line offers them in
its help without loading PyTorch."""

# Beam search keeps beam_size hypotheses per clip and stops once that many have ended: a beam of thousands
# ran for hours on a 1 s clip and ranks no better than a handful (the default model peaks at 3-5).
MAX_BEAM_SIZE = 64

# Weights of the decoder (audiocap.quantize); "auto" = fp16 on a CPU that has the kernel, else fp32.
PRECISIONS = ("auto", "fp32", "fp16", "int8")
