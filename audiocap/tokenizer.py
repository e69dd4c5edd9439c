"""Word-level tokenizer with the Clotho conventions (lowercase, punctuation stripped).

Ids 0-3 are reserved: `<pad>=0 <bos>=1 <eos>=2 <unk>=3`; words follow in order of decreasing
training-set count (ties alphabetical), so a vocabulary built twice from the same captions is
identical. `encode` adds no `<bos>`/`<eos>`: the model and the decoders place those.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
TOKENIZER_FORMAT = "audiocap-word-v1"

_APOSTROPHES = re.compile(r"['’`]")
_NOT_WORD = re.compile(r"[^a-z0-9\s]")  # applied after lowercasing


def normalize(text: str) -> str:
    """Clotho conventions: lowercase; "dog's" -> "dogs"; other punctuation -> space; single spaces."""
    text = _APOSTROPHES.sub("", text.lower())
    return " ".join(_NOT_WORD.sub(" ", text).split())


class Tokenizer:
    pad, bos, eos, unk = 0, 1, 2, 3

    def __init__(self, words: Iterable[str]):
        """`words`: the vocabulary after the four special tokens, in id order."""
        self.itos: list[str] = list(SPECIAL_TOKENS) + list(words)
        self.stoi: dict[str, int] = {word: i for i, word in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("tokenizer vocabulary has duplicate words or repeats a special token")

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> "Tokenizer":
        """Vocabulary of the words occurring at least `min_count` times; rarer words become `<unk>`."""
        counts = Counter(word for caption in captions for word in normalize(caption).split())
        kept = [word for word, n in counts.items() if n >= min_count]
        return cls(sorted(kept, key=lambda word: (-counts[word], word)))

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def n_vocab(self) -> int:
        return len(self.itos)

    @property
    def special_ids(self) -> tuple[int, ...]:
        return (self.pad, self.bos, self.eos, self.unk)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(word, self.unk) for word in normalize(text).split()]

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first `<eos>`; `<pad>`/`<bos>` are skipped, `<unk>` is kept visible."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i not in (self.pad, self.bos):
                words.append(self.itos[i])
        return " ".join(words)

    def to_dict(self) -> dict:
        return {"format": TOKENIZER_FORMAT, "words": self.itos[len(SPECIAL_TOKENS):]}

    @classmethod
    def from_dict(cls, data: dict) -> "Tokenizer":
        if not isinstance(data, dict) or data.get("format") != TOKENIZER_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"tokenizer format {found!r} is not {TOKENIZER_FORMAT!r}")
        return cls(data["words"])
