"""Reading the sender of a letter from its OCR text (the block at the top of a German letter).

A case started from a paper letter needs an applicant; the sender block is the best source
until a clerk corrects it. Heuristic on purpose: the first short lines that look like a name
and an address (street with number, postcode with town), before the recipient block
("An die Stadt …") or the salutation. Unknown senders get a placeholder that says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

UNKNOWN_SENDER = "Absender unbekannt (Posteingang)"
_POSTCODE_TOWN = re.compile(r"^\s*(?:D-)?\d{5}\s+\S")
_STREET = re.compile(r"^\s*[A-Za-zÄÖÜäöüß.\- ]{3,}\s+\d+\s*[a-zA-Z]?\s*$")
_NAME = re.compile(r"^\s*(?:(?:Frau|Herr|Dr\.|Prof\.)\s+)*[A-ZÄÖÜ][a-zäöüß\-]+(?:\s+[A-ZÄÖÜ][a-zäöüß\-]+){1,3}\s*$")
_STOP = re.compile(r"^\s*(an\s+die|an\s+das|an\s+den|stadt\b|gemeinde\b|sehr\s+geehrte|betreff|betr\.|ihr\s+zeichen|"
                   r"aktenzeichen|az\.)", re.IGNORECASE)


@dataclass
class Sender:
    name: str
    address_lines: list[str] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return self.name != UNKNOWN_SENDER


def sender_from_text(text: str, *, max_lines: int = 12) -> Sender:
    """The sender block at the top of the letter, or a placeholder."""
    lines = [ln.strip() for ln in text.replace("\f", "\n").splitlines() if ln.strip()][:max_lines]
    for i, line in enumerate(lines):
        if _STOP.match(line):
            break
        if len(line) <= 60 and _NAME.match(line):
            address: list[str] = []
            for nxt in lines[i + 1:i + 4]:
                if _STOP.match(nxt):
                    break
                if _STREET.match(nxt) or _POSTCODE_TOWN.match(nxt) or ("," in nxt and _POSTCODE_TOWN.search(
                        nxt.split(",")[-1])):
                    address.extend(part.strip() for part in nxt.split(",") if part.strip())
                else:
                    break
            return Sender(name=line, address_lines=address[:3])
    return Sender(name=UNKNOWN_SENDER)
