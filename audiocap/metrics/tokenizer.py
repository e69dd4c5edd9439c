"""Caption tokenization exactly as the COCO caption toolkit does it, in pure Python.

`pycocoevalcap` pipes every caption through Stanford CoreNLP 3.4.1's `PTBTokenizer -preserveLines
-lowerCase` (one JVM per call) and then drops the tokens of its punctuation list. We reproduce the
lexer rules that matter for English captions, in the lexer's order of precedence, so that the
tokens are identical (checked against the Java tokenizer on every Clotho and AudioCaps caption).

Two quirks of the reference are kept on purpose, because the scores depend on them:
- `-lowerCase` lowercases the bracket escapes too, so "(" becomes "-lrb-", which is *not* in the
  punctuation list (it holds "-LRB-") and therefore stays in the caption;
- runs of "!" or "?" are one token ("!!"), also not in the list.
"""
from __future__ import annotations

import re
import string
import unicodedata
from bisect import bisect_right
from functools import lru_cache
from itertools import accumulate, chain

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS, verbatim (case included, see above).
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# The lexer's normalizations of typographic characters (ptb3Escaping in CoreNLP 3.4.1).
_TYPOGRAPHY = str.maketrans(
    {"\u2018": "`", "\u2019": "'", "\u00b4": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"',
     "\u00ab": '"', "\u00bb": '"', "\u2026": "...", "\u0085": "...", "\u2013": "--", "\u2014": "--",
     "\u00a0": " "}
)
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}

# Abbreviations that keep their period (PTBLexer's ABBREV1, ABBREV2 and ABBREV4, caseless).
_ABBREVIATIONS = frozenset(
    """jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri
    ala ariz calif colo conn ct dak fla ga ind kan kans ky md mich minn mo
    mont neb nev okla penn tenn va vt wis wisc wyo
    inc co cos corp pty ltd plc rt bancorp bhd assn univ intl sys tel est ext sq jr sr bros esq
    etc al seq bldg pls wrt orig incl mr mrs ms miss dr drs prof profs sen sens rep reps atty attys
    lt col gen messrs gov govs adm rev fr maj sgt cpl pvt capt st ste sta ave pres lieut hon brig
    cmdr comdr pfc spc supt supts det mt ft adj adv asst assoc ens insp mlle mme msgr sfc
    invt elec natl mfg mtg dept blvd rd viz exh exhs govt wm jos cie cf vs""".split()
)
# ... and those the lexer matches case-sensitively, because they are also common words ("mass.").
_CASED_ABBREVIATIONS = frozenset("Az Ark Del Ill La Mass Miss Ore Pa Tex Wash Pl Sc Ph v".split())
# ABBREV3: abbreviations that keep their period only before a number ("no. 5").
_NUMBER_ABBREVIATIONS = frozenset("ca ch chs fig figs prop no nos vol vols sec sect secs sects art arts para paras pp op approx pt rs".split())

_ALNUM = r"[^\W_]"
_LEXER = re.compile(
    rf"""
    (?P<url>(?:https?|ftp)://\S+|www\.\S+\.[a-z]{{2,4}}\S*)
    |(?P<email>[\w.%+-]+@[A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9])
    |(?P<assimilation>(?i:can(?=not)|(?:gon|wan|got|lem|gim)(?=(?:na|ta|me)(?![^\W\d_]))))
    |(?P<twitter>[@#][A-Za-z_]\w*)
    |(?P<apostrophe_word>(?i:'n'|'n(?!{_ALNUM})|'(?:em|till?|cause|[2-9]0s)(?!{_ALNUM})|'t(?=is|was)
        |[a-hj-xz]'{_ALNUM}{{2,}}|(?:th|y)'(?={_ALNUM})))
    |(?P<word_before_not>(?i:{_ALNUM}+?(?=n't(?!{_ALNUM}))))
    |(?P<clitic>(?i:n't|'(?:s|m|d|re|ve|ll))(?!{_ALNUM}))
    |(?P<acronym>(?i:[a-z](?:\.[a-z])+\.)(?!{_ALNUM}))
    |(?P<number>\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?)
    |(?P<word>{_ALNUM}+(?:(?:[-_./:]|[!?](?={_ALNUM})){_ALNUM}+)*)
    |(?P<ellipsis>\.\.\.+|\.(?:\ \.){{2,}})
    |(?P<dashes>--+)
    |(?P<double_quote>"|''|``)
    |(?P<run>[!?]+|\*+|_+|\#+|@+)
    |(?P<other>\S)
    """,
    re.VERBOSE,
)


def _ends_in_abbreviation(word: str, following: str) -> bool:
    """Whether the period right after `word` belongs to it (an abbreviation) or ends a sentence."""
    lower = word.lower()
    if len(word) == 1 and word.isalpha():  # single letters are acronyms ("a b c. d")
        return True
    if lower in _ABBREVIATIONS or word in _CASED_ABBREVIATIONS:
        return True
    return lower in _NUMBER_ABBREVIATIONS and bool(re.match(r"\s*\d", following))


def ptb_tokens(line: str) -> list[str]:
    """Tokens of one line as CoreNLP 3.4.1's PTBTokenizer prints them (before lowercasing)."""
    line = line.translate(_TYPOGRAPHY)
    # The lexer drops characters it cannot tokenize (controls, format characters, unassigned).
    if not line.isprintable():
        line = "".join(c for c in line if not unicodedata.category(c).startswith("C") or c in "\t")
    tokens: list[str] = []
    position = 0
    while True:
        while position < len(line) and line[position].isspace():
            position += 1
        if position == len(line):
            return tokens
        match = _LEXER.match(line, position)
        token, position = match.group(), match.end()
        kind = match.lastgroup
        if kind == "word" and line.startswith(".", position) and not line.startswith("..", position):
            if _ends_in_abbreviation(token, line[position + 1:]):
                token, position = token + ".", position + 1
        if kind == "ellipsis":
            token = "..."
        elif kind == "dashes":
            token = "--"
        elif token in ('"', "'"):  # a quote opens after a space or bracket ('"' also at the line's start)
            before = line[match.start() - 1] if match.start() else ("" if token == '"' else "x")
            opening = before == "" or before.isspace() or before in "([{"
            token = {'"': "``", "'": "`"}[token] if opening else {'"': "''", "'": "'"}[token]
        elif token in _BRACKETS:
            token = _BRACKETS[token]
        tokens.append(token)


# Fast path. Most captions are ASCII words separated by spaces, each word maybe followed by one
# "," or "." (and a few free-standing "," or "."). In such a caption the lexer's rules find no
# quotes, apostrophes, brackets, dashes, "@", "#", "/" or ":", and no "," or "." between two
# characters (which numbers, acronyms, URLs and dotted words need), so its tokens are the words
# and separate "," and "." tokens, which the punctuation list removes. Two rules can still
# change such a caption, and send it down the full lexer instead:
# - a period that belongs to the word before it (an abbreviation, `_ends_in_abbreviation`); we
#   look for the words whose period it may be, whatever their case and whatever follows;
# - assimilations, which split a word ("cannot" -> "can not", "gonna" -> "gon na"); we look for
#   their letters anywhere, not only at a word's start.
# Both shortcuts are cheaper than the exact rules and only err on the side of the full lexer.
# The checks run over many captions at once, joined by newlines: one regular-expression search
# over a long text is much faster than one per caption.
_NOT_PLAIN_CHARACTER = re.compile(r"[^A-Za-z0-9 ,.\n]")
_PUNCTUATION_INSIDE = re.compile(r"[,.](?![ \n]|\Z)")
_ASSIMILATION = re.compile(r"(?:can|gon|wan|got|lem|gim)(?:not|na|ta|me)")  # in lowercased text
# The words whose period `_ends_in_abbreviation` may keep, lowercased.
_MAY_KEEP_PERIOD = frozenset(
    set(string.ascii_lowercase) | _ABBREVIATIONS | _NUMBER_ABBREVIATIONS | {w.lower() for w in _CASED_ABBREVIATIONS}
)


def _line_numbers(text: str, positions: list[int]) -> set[int]:
    """The lines of `text` that hold these positions."""
    starts = [0, *accumulate(len(line) + 1 for line in text.split("\n"))]
    return {bisect_right(starts, position) - 1 for position in positions}


def _plain_lines(text: str) -> list[str | None]:
    """Each line of `text` tokenized if it is a plain caption (see above), else None."""
    positions = [m.start() for m in chain(_NOT_PLAIN_CHARACTER.finditer(text), _PUNCTUATION_INSIDE.finditer(text))]
    pieces = text.split(".")
    words = [p[max(p.rfind(" "), p.rfind("\n")) + 1:].lower() for p in pieces[:-1]]  # the word before each period
    if not _MAY_KEEP_PERIOD.isdisjoint(words):
        ends = accumulate(len(p) + 1 for p in pieces)  # the position after each period
        positions += [end - 1 for word, end in zip(words, ends) if word in _MAY_KEEP_PERIOD]
    not_plain = _line_numbers(text, positions) if positions else set()
    # Lowercasing may change the length of a non-ASCII line (which is not plain anyway), so
    # positions in `lower` are counted in its own lines.
    lower = text.lower()
    assimilations = [m.start() for m in _ASSIMILATION.finditer(lower)]
    not_plain |= _line_numbers(lower, assimilations) if assimilations else set()
    lines = lower.replace(",", " ").replace(".", " ").split("\n")
    return [None if i in not_plain else " ".join(line.split()) for i, line in enumerate(lines)]


def _plain_tokens(caption: str) -> str | None:
    """The tokenized caption if it is plain (see above), else None."""
    lines = _plain_lines(caption)
    return lines[0] if len(lines) == 1 else None


@lru_cache(maxsize=1 << 18)
def tokenize(caption: str) -> str:
    """One caption as the COCO toolkit scores it: PTB tokens, lowercased, punctuation removed."""
    plain = _plain_tokens(caption)
    if plain is not None:
        return plain
    tokens = ptb_tokens(caption.replace("\n", " "))
    return " ".join(t for t in (t.lower() for t in tokens) if t not in PUNCTUATIONS)


def tokenize_batch(captions: list[str]) -> list[str]:
    """`[tokenize(c) for c in captions]`, with the fast path's checks run once over all captions."""
    plain = _plain_lines("\n".join(captions)) if captions else []
    if len(plain) != len(captions):  # a caption holds a line break: the lines are not the captions
        return [tokenize(c) for c in captions]
    return [tokenize(caption) if tokens is None else tokens for caption, tokens in zip(captions, plain)]
