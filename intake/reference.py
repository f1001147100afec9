"""Finding our own references in the text of a letter: the Aktenzeichen and the applicant reference number.

Aktenzeichen
------------
Format: ``<file plan NN.NN>-<year>-<sequence 6 digits>``, e.g. ``32.10-2026-000042``.
OCR garbles digits in predictable ways (O→0, l/I/|→1, S→5, B→8, Z→2, G→6, T→7, ...), may read one digit as
an unrelated letter, drop or add spaces, put a line break inside the reference, and read the hyphen as a
dash, a dot, ``~``, ``=`` or not at all. :func:`find_reference_candidates` normalises every
Aktenzeichen-shaped run and rates it; a digit read as an unrelated letter becomes ``0`` and lowers the
confidence, so that the caller's fallback lookup over :func:`near_variants` (one digit substituted) still
reaches the right register entry.

Applicant reference number (Vorgangsnummer for the applicant)
--------------------------------------------------------------
Format ``B-XXXX-XXXX`` over :data:`APPLICANT_ALPHABET` (the 32 symbols of the verification codes: no 0/O,
1/I). The first seven symbols are 35 bits of SHA-256 over the case id (uniform, exactly 5 bits per symbol);
the eighth is a Luhn mod 32 check symbol, which catches every single wrong symbol and every swap of two
neighbouring symbols, so a random ``B-`` run passes only with probability 1/32. The number is a reference,
not a secret: it never grants access to a case. :func:`find_applicant_refs` maps OCR glyphs that are not in
the alphabet (0/O, 1/I/l/|) to the symbols they are usually misread from, and repairs one misread between
confusable symbols (5/S, 8/B, 2/Z, 6/G, ...) when exactly one repair passes the check.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass

# --------------------------------------------------------------------------- Aktenzeichen

#: OCR glyph → the digit it usually stands for.
_DIGIT_OF: dict[str, str] = {
    "O": "0", "o": "0", "D": "0", "Q": "0", "U": "0", "°": "0",
    "I": "1", "l": "1", "|": "1", "i": "1", "!": "1", "L": "1", "J": "1", "]": "1", "[": "1",
    "Z": "2", "z": "2",
    "A": "4",
    "S": "5", "s": "5",
    "G": "6", "b": "6",
    "T": "7",
    "B": "8",
    "g": "9", "q": "9",
}
#: Glyphs that are very common misreadings (cost less confidence than the rest of the map).
_COMMON = frozenset("OoIl|SsBZz")
_D = r"[0-9A-Za-z|!°\[\]]"
_GAP = r"[ \t]?"
#: Between the three parts: a hyphen or one of its misreadings (or nothing), spaces and line breaks.
_SEP = r"[ \t]*(?:[-–—_~=.,·:\u00ad][ \t]*){0,2}\n?[ \t]*"
PATTERN = re.compile(
    rf"(?<![0-9])({_D}{_GAP}{_D})[ \t]?[.,·:][ \t]?({_D}{_GAP}{_D}){_SEP}"
    rf"([2Z]{_GAP}[0OoD]{_GAP}{_D}{_GAP}{_D}){_SEP}"
    rf"((?:{_D}{_GAP}){{5}}{_D})(?![0-9])"
)
_EXACT = re.compile(r"\d{2}\.\d{2}-\d{4}-\d{6}")
_AZ = re.compile(r"^(\d{2})\.(\d{2})-(\d{4})-(\d{6})$")
#: Labels that introduce a reference: a candidate right after one is more likely to be ours.
_LABEL = re.compile(r"(?:\b(?:a\s*z|aktenzeichen|gesch[aä]ftszeichen|zeichen|bezug|vorgang)\b\.?\s*:?\s*$)",
                    re.IGNORECASE)
#: At most this many glyphs of a candidate may be unrelated letters (each becomes 0).
_MAX_UNKNOWN = 1
#: At most this many rare or unknown substitutions in a candidate (more: a word, not a garbled number).
_MAX_UNUSUAL = 3
_MAX_LETTERS = 8
#: ``dd.mm.yyyy`` followed by a number: a date, not a reference, unless the text says otherwise.
_DATE_LIKE = re.compile(r"^(?:0[1-9]|[12]\d|3[01])\.(?:0[1-9]|1[0-2])\.20\d\d")


@dataclass(frozen=True)
class Candidate:
    """One Aktenzeichen-shaped run of the text, normalised and rated (confidence in [0, 1])."""

    value: str
    confidence: float
    #: True when the text holds the reference literally (``NN.NN-YYYY-NNNNNN``, nothing to repair).
    exact: bool
    #: Character offsets ``(start, end)`` of the run in the text.
    span: tuple[int, int]
    #: A label (``Az.:``, ``Aktenzeichen:``, ``Ihr Zeichen:``, ...) stands right before it.
    labelled: bool = False


def _digits(part: str) -> tuple[str, int, int, int] | None:
    """``part`` without whitespace as digits, with counts of common, rare and unknown substitutions."""
    out: list[str] = []
    common = rare = unknown = 0
    for ch in part:
        if ch.isspace():
            continue
        if ch.isdigit():
            out.append(ch)
        elif ch in _DIGIT_OF:
            out.append(_DIGIT_OF[ch])
            if ch in _COMMON:
                common += 1
            else:
                rare += 1
        else:
            out.append("0")
            unknown += 1
    return "".join(out), common, rare, unknown


def find_reference_candidates(text: str) -> list[Candidate]:
    """Every Aktenzeichen-shaped run in ``text``, normalised, one per value (its best reading), best first."""
    best: dict[str, Candidate] = {}
    for m in PATTERN.finditer(text):
        raw = m.group(0)
        parts = [_digits(m.group(i)) for i in range(1, 5)]
        value = f"{parts[0][0]}.{parts[1][0]}-{parts[2][0]}-{parts[3][0]}"  # type: ignore[index]
        common = sum(p[1] for p in parts)  # type: ignore[index]
        rare = sum(p[2] for p in parts)  # type: ignore[index]
        unknown = sum(p[3] for p in parts)  # type: ignore[index]
        letters = sum(ch.isalpha() for ch in raw)
        if unknown > _MAX_UNKNOWN or rare + unknown > _MAX_UNUSUAL or letters > _MAX_LETTERS or not _AZ.match(value):
            continue
        exact = bool(_EXACT.fullmatch(raw))
        labelled = bool(_LABEL.search(text[max(0, m.start() - 40):m.start()]))
        odd_seps = _odd_separators(raw)
        confidence = 1.0 if exact else 0.9
        confidence -= 0.04 * common + 0.08 * rare + 0.25 * unknown + 0.05 * odd_seps
        if _DATE_LIKE.match(raw):
            confidence -= 0.3
        if labelled:
            confidence += 0.1
        confidence = round(min(1.0, max(0.05, confidence)), 3)
        cand = Candidate(value=value, confidence=confidence, exact=exact, span=(m.start(), m.end()),
                         labelled=labelled)
        old = best.get(value)
        if old is None or cand.confidence > old.confidence:
            best[value] = cand
    return sorted(best.values(), key=lambda c: (-c.confidence, c.span[0]))


def _odd_separators(raw: str) -> int:
    """How far the punctuation of ``raw`` is from ``NN.NN-YYYY-NNNNNN``: missing or odd hyphens, inner spaces."""
    seps = re.findall(r"[^0-9A-Za-z|!°\[\]]+", raw)
    odd = abs(len(re.findall(r"[-–—]", raw)) - 2)
    odd += sum(1 for s in seps if s.strip() not in ("-", "–", "—", ".", ""))
    odd += sum(1 for s in seps if s != s.strip() or s == " ")
    return odd


def find_references(text: str) -> list[str]:
    """All Aktenzeichen-shaped references in ``text``, normalised, in order of appearance, without duplicates."""
    return [c.value for c in sorted(find_reference_candidates(text), key=lambda c: c.span[0])]


def near_variants(az: str) -> list[str]:
    """Every Aktenzeichen within one digit substitution of ``az`` (``az`` itself excluded), in a fixed order.

    For a register lookup ``IN (...)`` when the read value itself is not registered: OCR misread one digit.
    The year keeps its leading ``20`` (the pattern requires it). 14 digits → at most 12 * 9 = 108 variants.
    """
    m = _AZ.match(az)
    if not m:
        raise ValueError(f"not an Aktenzeichen: {az!r}")
    digits = list("".join(m.groups()))
    out: list[str] = []
    for i, d in enumerate(digits):
        if i in (4, 5):  # the "20" of the year
            continue
        for alt in "0123456789":
            if alt == d:
                continue
            v = digits.copy()
            v[i] = alt
            s = "".join(v)
            out.append(f"{s[0:2]}.{s[2:4]}-{s[4:8]}-{s[8:14]}")
    return out


# --------------------------------------------------------------------------- applicant reference number

#: Same 32 symbols as the verification codes (eakte.render.VERIFICATION_ALPHABET): no 0/O, no 1/I.
APPLICANT_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
assert len(APPLICANT_ALPHABET) == 32 and len(set(APPLICANT_ALPHABET)) == 32
_VALUE = {c: i for i, c in enumerate(APPLICANT_ALPHABET)}
APPLICANT_PREFIX = "B"
_PAYLOAD = 7
_APPLICANT_RE = re.compile(r"^B-[23456789A-HJ-NP-Z]{4}-[23456789A-HJ-NP-Z]{4}$")

#: OCR glyph that is not in the alphabet → the symbols it is usually misread from (most likely first).
_GLYPH_SOURCES: dict[str, str] = {
    "0": "DQ", "O": "DQ", "Ø": "DQ", "°": "D",
    "1": "LT7", "I": "LT7", "|": "LT7", "!": "L", "]": "J", "[": "L",
}
#: Symbols of the alphabet that OCR confuses with each other (tried for a one-symbol repair).
_CONFUSABLE: dict[str, str] = {"5": "S", "S": "5", "8": "B", "B": "8", "2": "Z", "Z": "2", "6": "G", "G": "6"}
_RG = r"[23456789A-Za-z0|!\[\]Ø°]"
_APPLICANT_SCAN = re.compile(
    rf"(?<![0-9A-Za-z])[B8][ \t]*(?:[-–—~=_.:][ \t]*)?((?:{_RG}[ \t]?){{3}}{_RG})[ \t]*(?:[-–—~=_.:][ \t]*)?"
    rf"((?:{_RG}[ \t]?){{3}}{_RG})(?![0-9A-Za-z])"
)


def _luhn32_check(payload: str) -> str:
    """Luhn mod N (N = 32) check symbol over ``payload``."""
    factor, total = 2, 0
    for ch in reversed(payload):
        addend = factor * _VALUE[ch]
        addend = addend // 32 + addend % 32
        total += addend
        factor = 1 if factor == 2 else 2
    return APPLICANT_ALPHABET[(32 - total % 32) % 32]


def applicant_ref_valid(ref: str) -> bool:
    """``ref`` has the ``B-XXXX-XXXX`` form and a correct check symbol."""
    if not _APPLICANT_RE.match(ref):
        return False
    body = ref[2:6] + ref[7:11]
    return _luhn32_check(body[:_PAYLOAD]) == body[_PAYLOAD]


def applicant_ref_for(case_id: str, attempt: int = 0) -> str:
    """The applicant reference number of a case: deterministic and uniform over 32**7 values.

    ``attempt`` > 0 gives another number for the same case: on the (rare: 35 bits, ~1 in 340 000 000 per
    pair of cases) clash with an existing number the caller retries with ``attempt + 1``.
    """
    salt = f"aktenlauf/applicant-ref/{attempt}\x00" if attempt else "aktenlauf/applicant-ref\x00"
    bits = int.from_bytes(hashlib.sha256((salt + case_id).encode("utf-8")).digest()[:8], "big") >> (64 - 5 * _PAYLOAD)
    payload = "".join(APPLICANT_ALPHABET[(bits >> (5 * (_PAYLOAD - 1 - i))) & 0x1F] for i in range(_PAYLOAD))
    body = payload + _luhn32_check(payload)
    return f"{APPLICANT_PREFIX}-{body[:4]}-{body[4:]}"


def _readings(body: str) -> list[str] | None:
    """All readings of an OCR'd 8-glyph body as alphabet symbols (glyphs outside it expanded), or None."""
    options: list[str] = []
    for ch in body:
        up = ch.upper()
        if ch in _GLYPH_SOURCES:
            options.append(_GLYPH_SOURCES[ch])
        elif up in _VALUE:
            options.append(up)
        elif up in _GLYPH_SOURCES:
            options.append(_GLYPH_SOURCES[up])
        else:
            return None
    if sum(len(o) > 1 for o in options) > 3:  # too garbled to be one of ours
        return None
    return ["".join(p) for p in itertools.product(*options)]


def _checked(body: str) -> str | None:
    return body if _luhn32_check(body[:_PAYLOAD]) == body[_PAYLOAD] else None


def find_applicant_refs(text: str) -> list[str]:
    """Applicant reference numbers in ``text`` (check symbol verified), normalised ``B-XXXX-XXXX``, in order.

    A run whose readings pass the check in exactly one way is taken; otherwise one confusable symbol is
    repaired when exactly one repair passes. Runs with several valid readings are ambiguous and dropped.
    """
    found: list[str] = []
    for m in _APPLICANT_SCAN.finditer(text):
        raw = re.sub(r"[ \t]", "", m.group(1) + m.group(2))
        lower = sum(ch.islower() for ch in raw)
        if lower > 2:  # ordinary words, not a printed code
            continue
        readings = _readings(raw)
        if not readings:
            continue
        valid = {b for b in readings if _checked(b)}
        if not valid and len(readings) == 1:
            body = readings[0]
            valid = {b for i, ch in enumerate(body) for alt in _CONFUSABLE.get(ch, "")
                     if _checked(b := body[:i] + alt + body[i + 1:])}
        if len(valid) == 1:
            body = valid.pop()
            ref = f"{APPLICANT_PREFIX}-{body[:4]}-{body[4:]}"
            if ref not in found:
                found.append(ref)
    return found
