"""Splitting German compounds (Komposita) into their parts, for full-text search.

The stock ``german`` text-search configuration of PostgreSQL (and any Snowball stemmer)
treats "Baugenehmigung" as one word, so a search for "Genehmigung" would not find it. This
module finds the parts ("bau", "genehmigung"); the search index adds them as extra terms,
identically on PostgreSQL and SQLite, with nothing installed into the database server.

The lexicon is the noun list of the PyPI package ``german-nouns`` (Wiktionary data): every
form (lemma and inflections) of ordinary nouns, no names or places. It is read once, lazily,
on first use (about a second) and kept in memory; splits are cached per word.

A word is split at the longest noun at its end (the head, e.g. "urkunde" in
"Geburtsurkunde", not "kunde") whose remainder is a noun itself, optionally followed by a
linking element (Fugenelement: "s" in "Aufenthalts-", "es", "n", "en", "er", "e"), a noun
stem without its final "e" ("Schul-"), a modifier that is productive in the lexicon
("Melde-", "Wohn-"), or again a compound. Verbal and prepositional prefixes ("ver", "be",
"aus", ...) are never parts, so "Verfahren" and "Ausweis" stay whole, and derivational
endings ("-schaft", "-heit") are never heads.
"""

from __future__ import annotations

import csv
import threading
from functools import lru_cache

MIN_WORD = 6          # shorter words are never split
MIN_HEAD = 4          # shorter heads only from SHORT_HEADS
MIN_MODIFIER = 3      # "bau" in "Baugenehmigung"
PRODUCTIVE_MIN = 4    # a non-noun modifier must start this many lexicon compounds ("melde", "wohn")

#: Three-letter nouns that are common heads ("Standes|amt", "Bürger|rat").
SHORT_HEADS = frozenset("amt rat tag weg hof ort bad eid ehe zug bus rad tor see arzt tür uhr".split())

#: Linking elements (Fugenelemente) tried between modifier and head, shortest first (the
#: longest lexicon form wins: "Lebens-" is "leben" + s, not "leb" + ens).
LINKS = ("", "s", "n", "e", "es", "en", "er", "ns", "ens")

#: Prefixes and particles that form words but are not compound parts of their own.
NOT_MODIFIERS = frozenset("""
    ab an auf aus be bei dar durch ein emp ent er ge gegen hin hinter her miss mit nach neben ob
    um un unter ur ver vor weg wider zer zu zurück zusammen über wieder
    gen los los voll all ander selbst
""".split())

#: Nouns that are (also) derivational endings: never the head of a split ("Erb|schaft").
NOT_HEADS = frozenset("""
    schaft schaften heit heiten keit keiten tum tümer nis nisse ling linge chen lein ei eien
    ion ionen tion tionen ung ungen ismus ist isten ant anten ent enten ier iere ade aden
    ette etten ur uren age agen ment ments ität itäten ik iken or oren
    tern lung lungen ern samt sange eilung einigung hörigkeit
""".split())

#: Verbal prefixes: a learned modifier of at most three more letters after one ("besch",
#: "verw") is a fragment of a prefixed word, not a stem.
_VERBAL = ("be", "ge", "ver", "er", "ent", "zer", "unt")

_lock = threading.Lock()


class Lexicon:
    """Noun forms, lemmas and productive modifiers, all lower case."""

    def __init__(self, nouns: frozenset[str], lemmas: frozenset[str], modifiers: frozenset[str]) -> None:
        self.nouns = nouns
        self.lemmas = lemmas
        self.modifiers = modifiers

    @classmethod
    def from_words(cls, forms: set[str], lemmas: set[str]) -> Lexicon:
        nouns = frozenset(w for w in forms if len(w) >= 3)
        # Modifiers that are not nouns themselves but begin several lexicon compounds: verb
        # stems such as "melde" (Meldebescheinigung, Meldebehörde) or "wohn" (Wohnort).
        counts: dict[str, int] = {}
        for lemma in lemmas:
            for i in range(MIN_MODIFIER, len(lemma) - 3):
                head = lemma[i:]
                if head in nouns and head not in NOT_HEADS:
                    prefix = lemma[:i]
                    if prefix not in nouns and prefix not in NOT_MODIFIERS:
                        counts[prefix] = counts.get(prefix, 0) + 1
        modifiers = frozenset(p for p, n in counts.items()
                              if n >= PRODUCTIVE_MIN and len(p) >= 4 and _has_vowel(p) and not _fragment(p))
        return cls(nouns, frozenset(lemmas), modifiers)


def _fragment(p: str) -> bool:
    return any(p.startswith(v) and len(p) <= len(v) + 3 for v in _VERBAL)


def _has_vowel(w: str) -> bool:
    return any(c in "aeiouyäöü" for c in w)


def _read_german_nouns() -> Lexicon:
    from german_nouns.config import CSV_FILE_PATH

    forms: set[str] = set()
    lemmas: set[str] = set()
    keep_pos = {"Substantiv", "adjektivische Deklination"}
    with open(CSV_FILE_PATH, encoding="utf-8", newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:
            if not row or not set(row[1].split(",")) <= keep_pos:
                continue
            for cell in row[7:]:  # the lemma and all inflected forms
                w = cell.strip().lower()
                if w and w.isalpha():
                    forms.add(w)
            lemma = row[0].strip().lower()
            if lemma.isalpha():
                lemmas.add(lemma)
                forms.add(lemma)
    return Lexicon.from_words(forms, lemmas)


_lexicon: Lexicon | None = None


def lexicon() -> Lexicon:
    """The lexicon, read on first use and kept (thread-safe)."""
    global _lexicon
    if _lexicon is None:
        with _lock:
            if _lexicon is None:
                _lexicon = _read_german_nouns()
    return _lexicon


def _is_head(lex: Lexicon, head: str) -> bool:
    if head in NOT_HEADS:
        return False
    if len(head) < MIN_HEAD:
        return head in SHORT_HEADS
    if head in lex.nouns:
        return True
    for fem in ("in", "innen"):  # "Antrag|stellerin"
        if head.endswith(fem) and head[: -len(fem)] in lex.nouns and len(head) - len(fem) >= MIN_HEAD:
            return True
    return False


def _modifier_base(lex: Lexicon, m: str) -> str | None:
    """The lexicon form of a modifier written as ``m`` (with or without a linking element)."""
    if m in NOT_MODIFIERS:
        return None
    bases = [m[: len(m) - len(link)] if link else m for link in LINKS if m.endswith(link)]
    bases = [b for b in bases if len(b) >= MIN_MODIFIER and b not in NOT_MODIFIERS]
    for known in (lex.lemmas, lex.nouns):  # "geburt" (lemma) before "aufenthalts" (a form)
        for base in bases:
            if base in known:
                return base
    for base in bases:
        if base + "e" in lex.lemmas:  # "Schul|amt", "Sprach|kurs"
            return base + "e"
    for base in bases:
        if base in lex.modifiers:
            return base
    return None


@lru_cache(maxsize=262_144)
def _split(word: str) -> tuple[str, ...]:
    lex = lexicon()
    n = len(word)
    for i in range(MIN_MODIFIER, n - 2):  # longest head first
        head = word[i:]
        if not _is_head(lex, head):
            continue
        modifier = word[:i]
        base = _modifier_base(lex, modifier)
        if base is not None:
            return (*(_split(base) if len(base) >= MIN_WORD else (base,)), *_split_head(head))
        if len(modifier) >= MIN_WORD:
            inner = _split(modifier)
            if len(inner) > 1:
                return (*inner, *_split_head(head))
            for link in LINKS[:-1]:  # a compound modifier with its linking element
                if modifier.endswith(link) and len(modifier) - len(link) >= MIN_WORD:
                    inner = _split(modifier[: -len(link)])
                    if len(inner) > 1:
                        return (*inner, *_split_head(head))
    return (word,)


def _split_head(head: str) -> tuple[str, ...]:
    return _split(head) if len(head) >= MIN_WORD else (head,)


def split(word: str) -> list[str]:
    """The parts of a compound, lower case, modifiers in their lexicon form:
    ``split("Aufenthaltsgenehmigung") == ["aufenthalt", "genehmigung"]``. A word that is not
    a compound comes back alone: ``split("Verfahren") == ["verfahren"]``."""
    w = word.lower()
    if len(w) < MIN_WORD or not w.isalpha():
        return [w]
    return list(_split(w))


def parts(word: str) -> list[str]:
    """Only the extra terms a compound adds to the index (empty for a simple word)."""
    p = split(word)
    return p if len(p) > 1 else []
