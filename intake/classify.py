"""Which service (and department) an unreferenced letter is about: catalog rules plus the mailroom's decisions.

Evidence per service, from its catalog entry (``keywords`` and the ``classification:`` block):

* ``regex`` hit in the folded text: 3.0 each;
* ``all`` group (every word present): 2.5 each;
* ``any`` word or keyword present (as a word or the start of a compound, e.g. *hundesteuer*bescheid): 1.0 each;
* ``fuzzy``: a word OCR garbled (rapidfuzz ratio ≥ 85 against an ``any``/``fuzzy``/keyword of ≥ 6 letters): 0.8;
* learned: the mailroom clerks' routing decisions, as nearest neighbours over the stored terms: 6.0 × the
  summed similarity of the (up to 7) most similar earlier letters routed to that service/department.

Scores are a softmax of the evidence over the services with any evidence plus an "unclear" option with
fixed evidence :data:`UNCLEAR_EVIDENCE`: one strong, uncontested signal gives a score near 1, two services
with similar evidence or only weak evidence give low scores. Against the default threshold 0.75 this means
roughly 3.5 points of evidence more than "unclear" and no close rival. Everything is deterministic.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rapidfuzz import fuzz, process

from eakte.stemmer import STOP_WORDS
from intake.service import ServiceEntry

MAX_TERMS = 200
#: Only the start of a very long text is classified (a letter's subject and first paragraphs decide).
MAX_TEXT_CHARS = 30_000
UNCLEAR_EVIDENCE = 2.0
W_REGEX, W_ALL, W_ANY, W_FUZZY, W_LEARNED = 3.0, 2.5, 1.0, 0.8, 6.0
FUZZY_CUTOFF = 85.0
NEIGHBOURS = 7
MIN_SIMILARITY = 0.15
DEFAULT_THRESHOLD = 0.75


def fold(text: str) -> str:
    """Lower case, umlauts and ß folded (ä→ae, ß→ss), other accents dropped, ligatures expanded."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("ä", "ae").replace("ö", "oe").replace("ü", "ue").replace("ß", "ss")
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


#: Words every letter has: salutations, closings, the authority's own name, months.
_LETTER_WORDS = ["sehr", "geehrte", "geehrter", "damen", "herren", "hallo", "liebe", "freundlichen", "gruessen", "gruss", "gruesse", "mfg", "vielen", "dank", "bitte", "danke", "anbei", "beste", "hochachtungsvoll", "betreff", "bezug", "datum", "seite", "stadt", "musterstadt", "rathausplatz", "strasse", "januar", "februar", "maerz", "april", "mai", "juni", "juli", "august", "september", "oktober", "november", "dezember", "telefon", "email", "mail"]
_STOP = frozenset(fold(w) for w in STOP_WORDS) | frozenset(_LETTER_WORDS)
_WORD = re.compile(r"[a-z]{3,}")


def folded_text(text: str) -> str:
    """The text rules are matched against: folded, words hyphenated across lines joined, whitespace collapsed."""
    text = fold(text[:MAX_TEXT_CHARS])
    text = re.sub(r"(?<=[a-z])-\s*\n\s*(?=[a-z])", "", text)
    return re.sub(r"\s+", " ", text).strip()


def terms(text: str) -> list[str]:
    """The letter's normalised terms: folded words of ≥ 3 letters without stop words, at most
    :data:`MAX_TERMS` distinct ones (most frequent first, ties in order of first appearance)."""
    counts = Counter(w for w in _WORD.findall(folded_text(text)) if w not in _STOP)
    return [w for w, _ in counts.most_common(MAX_TERMS)]


@dataclass(frozen=True)
class LearnedExample:
    """One mailroom routing decision: the letter's terms and where a clerk sent it."""

    terms: Sequence[str]
    service_key: str | None
    department: str | None


@dataclass(frozen=True)
class Suggestion:
    service_key: str | None
    department: str | None
    score: float
    reasons: list[str] = field(default_factory=list)


@dataclass
class _Rules:
    key: str | None
    department: str | None
    regex: list[re.Pattern[str]]
    all: list[list[str]]
    any: list[str]
    fuzzy: list[str]


def _present(word: str, words: set[str], prefixes: Sequence[str]) -> bool:
    """``word`` occurs as a word, or (≥ 5 letters) as the start of a compound."""
    if word in words:
        return True
    if len(word) < 5:
        return False
    return any(w.startswith(word) for w in prefixes)


class Classifier:
    """Ranks services for a letter. Build once per catalog/decision set; :meth:`rank` is cheap and pure."""

    def __init__(self, services: Iterable[ServiceEntry], learned: Iterable[LearnedExample] = ()) -> None:
        self._rules: list[_Rules] = []
        for s in services:
            c = s.classification
            self._rules.append(_Rules(
                key=s.key, department=s.department,
                regex=[re.compile(p, re.IGNORECASE) for p in c.regex],
                all=[list(g) for g in c.all],
                any=sorted({fold(w) for w in [*s.keywords, *c.any] if re.fullmatch(r"[a-z]{3,}", fold(w))}),
                fuzzy=sorted({fold(w) for w in c.fuzzy}),
            ))
        self._learned = [(frozenset(e.terms[:MAX_TERMS]), e.service_key, e.department) for e in learned
                         if e.service_key or e.department]
        df: Counter[str] = Counter(t for ts, _, _ in self._learned for t in ts)
        n = len(self._learned)
        self._idf = {t: math.log(1 + n / c) for t, c in df.items()}
        self._norms = [math.sqrt(sum(self._idf[t] ** 2 for t in ts)) for ts, _, _ in self._learned]
        self._departments = {r.key: r.department for r in self._rules}

    def _catalog_evidence(self, text: str, words: set[str]) -> dict[tuple[str | None, str | None], tuple[float, list[str]]]:
        prefixes = sorted(words)
        out: dict[tuple[str | None, str | None], tuple[float, list[str]]] = {}
        long_words = [w for w in prefixes if len(w) >= 6]
        for r in self._rules:
            score, reasons = 0.0, []
            for rx in r.regex:
                m = rx.search(text)
                if m:
                    score += W_REGEX
                    reasons.append(f"pattern: {m.group(0)[:60]!r}")
            for group in r.all:
                if all(_present(w, words, prefixes) for w in group):
                    score += W_ALL
                    reasons.append(f"words: {' + '.join(group)}")
            hit: set[str] = set()
            for w in r.any:
                if _present(w, words, prefixes):
                    hit.add(w)
                    score += W_ANY
                    reasons.append(f"keyword: {w}")
            fuzzy_targets = sorted({w for w in [*r.any, *r.fuzzy] if len(w) >= 6} - hit)
            for w in fuzzy_targets:
                if w in r.fuzzy and _present(w, words, prefixes):
                    score += W_ANY
                    reasons.append(f"keyword: {w}")
                    continue
                best = process.extractOne(w, long_words, scorer=fuzz.ratio, score_cutoff=FUZZY_CUTOFF)
                if best is not None:
                    score += W_FUZZY
                    reasons.append(f"similar word: {best[0]} ~ {w} ({best[1]:.0f})")
            if score > 0:
                out[(r.key, r.department)] = (score, reasons)
        return out

    def _learned_evidence(self, words: set[str]) -> dict[tuple[str | None, str | None], tuple[float, list[str]]]:
        if not self._learned:
            return {}
        q_norm = math.sqrt(sum(self._idf.get(t, 0.0) ** 2 for t in words))
        if q_norm == 0:
            return {}
        sims: list[tuple[float, int]] = []
        for i, (ts, _, _) in enumerate(self._learned):
            common = words & ts
            if not common or self._norms[i] == 0:
                continue
            sim = sum(self._idf[t] ** 2 for t in common) / (q_norm * self._norms[i])
            if sim >= MIN_SIMILARITY:
                sims.append((sim, i))
        sims.sort(key=lambda x: (-x[0], x[1]))
        out: dict[tuple[str | None, str | None], list[float]] = {}
        for sim, i in sims[:NEIGHBOURS]:
            _, key, dept = self._learned[i]
            if key is not None and dept is None:
                dept = self._departments.get(key)
            out.setdefault((key, dept), []).append(sim)
        return {k: (W_LEARNED * sum(v), [f"learned: {len(v)} similar letter(s) routed here (best {max(v):.2f})"])
                for k, v in out.items()}

    def rank(self, text: str, top: int = 3) -> list[Suggestion]:
        """The ``top`` most likely services/departments, best first; empty when nothing points anywhere."""
        ftext = folded_text(text)
        words = {w for w in _WORD.findall(ftext) if w not in _STOP}
        evidence = self._catalog_evidence(ftext, words)
        for k, (score, reasons) in self._learned_evidence(words).items():
            old = evidence.get(k, (0.0, []))
            evidence[k] = (old[0] + score, old[1] + reasons)
        if not evidence:
            return []
        peak = max(max(s for s, _ in evidence.values()), UNCLEAR_EVIDENCE)
        denom = math.exp(UNCLEAR_EVIDENCE - peak) + sum(math.exp(s - peak) for s, _ in evidence.values())
        ranked = sorted(evidence.items(), key=lambda kv: (-kv[1][0], kv[0][0] or "", kv[0][1] or ""))
        return [Suggestion(service_key=k[0], department=k[1], score=round(math.exp(s - peak) / denom, 4),
                           reasons=reasons)
                for k, (s, reasons) in ranked[:top]]
