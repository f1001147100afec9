"""Finding our own Aktenzeichen in the text of a letter.

Format: ``<file plan NN.NN>-<year>-<sequence 6 digits>``, e.g. ``32.10-2026-000042``.
OCR garbles digits in predictable ways (O→0, l/I/|→1, S→5, B→8, Z→2) and may put
spaces or a line break inside the reference, or read the hyphen as a dash or a dot;
candidates are normalised before they are compared with the register.
"""

from __future__ import annotations

import re

_DIGITISH = "0-9OoIl|SsBZz"
_D = f"[{_DIGITISH}]"
_SEP = r"\s*[-–—_.·]?\s*"
PATTERN = re.compile(
    rf"(?<![0-9A-Za-z])({_D}{{2}})\s*[.,·]\s*({_D}{{2}}){_SEP}([2Z]\s*[0Oo]\s*{_D}\s*{_D}){_SEP}((?:{_D}\s*){{5}}{_D})(?![0-9])"
)
_FIX = str.maketrans({"O": "0", "o": "0", "I": "1", "l": "1", "|": "1", "S": "5", "s": "5", "B": "8", "Z": "2", "z": "2"})


def _norm(part: str) -> str:
    return re.sub(r"\s+", "", part).translate(_FIX)


def find_references(text: str) -> list[str]:
    """All Aktenzeichen-shaped references in `text`, normalised, in order, without duplicates."""
    found: list[str] = []
    for m in PATTERN.finditer(text):
        az = f"{_norm(m.group(1))}.{_norm(m.group(2))}-{_norm(m.group(3))}-{_norm(m.group(4))}"
        if az not in found:
            found.append(az)
    return found
