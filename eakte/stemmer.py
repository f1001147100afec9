"""The Snowball German stemmer and stop words, in Python: the same lexemes PostgreSQL's
``german`` text-search configuration produces, so SQLite search and the highlighter (both
backends) agree with it. tests/unit/test_compounds.py checks it against PostgreSQL's output.

Algorithm: https://snowballstem.org/algorithms/german/stemmer.html (BSD licence).
"""

from __future__ import annotations

from functools import lru_cache

_VOWELS = frozenset("aeiouyäöü")
_S_ENDING = frozenset("bdfghklmnrt")
_ST_ENDING = frozenset("bdfghklmnt")

#: PostgreSQL's tsearch_data/german.stop (the Snowball German stop-word list).
STOP_WORDS = frozenset("""
aber alle allem allen aller alles als also am an ander andere anderem anderen anderer anderes anderm andern
anderr anders auch auf aus bei bin bis bist da damit dann der den des dem die das daß derselbe derselben
denselben desselben demselben dieselbe dieselben dasselbe dazu dein deine deinem deinen deiner deines denn
derer dessen dich dir du dies diese diesem diesen dieser dieses doch dort durch ein eine einem einen einer
eines einig einige einigem einigen einiger einiges einmal er ihn ihm es etwas euer eure eurem euren eurer
eures für gegen gewesen hab habe haben hat hatte hatten hier hin hinter ich mich mir ihr ihre ihrem ihren
ihrer ihres euch im in indem ins ist jede jedem jeden jeder jedes jene jenem jenen jener jenes jetzt kann
kein keine keinem keinen keiner keines können könnte machen man manche manchem manchen mancher manches mein
meine meinem meinen meiner meines mit muss musste nach nicht nichts noch nun nur ob oder ohne sehr sein seine
seinem seinen seiner seines selbst sich sie ihnen sind so solche solchem solchen solcher solches soll sollte
sondern sonst über um und uns unse unsem unsen unser unses unter viel vom von vor während war waren warst was
weg weil weiter welche welchem welchen welcher welches wenn werde werden wie wieder will wir wird wirst wo
wollen wollte würde würden zu zum zur zwar zwischen
""".split())


def _regions(w: str) -> tuple[int, int]:
    def after_vc(start: int) -> int:
        for i in range(start + 1, len(w)):
            if w[i] not in _VOWELS and w[i - 1] in _VOWELS:
                return i + 1
        return len(w)

    r1 = after_vc(0)
    r2 = after_vc(r1) if r1 < len(w) else len(w)
    return max(r1, 3), r2


def _longest(w: str, suffixes: tuple[str, ...]) -> str | None:
    for s in suffixes:  # ordered longest first
        if w.endswith(s):
            return s
    return None


@lru_cache(maxsize=262_144)
def stem(word: str) -> str:
    """The Snowball German stem of a lower-case word: ``stem("genehmigungen") == "genehm"``."""
    w = word.replace("ß", "ss")
    chars = list(w)
    for i in range(1, len(chars) - 1):  # u and y between vowels are consonants
        if chars[i] in "uy" and chars[i - 1] in _VOWELS and chars[i + 1] in _VOWELS:
            chars[i] = chars[i].upper()
    w = "".join(chars)
    r1, r2 = _regions(w)

    # step 1
    s = _longest(w, ("ern", "em", "er", "en", "es", "e", "s"))
    if s is not None and len(w) - len(s) >= r1:
        if s == "s":
            if len(w) >= 2 and w[-2] in _S_ENDING:
                w = w[:-1]
        else:
            w = w[: -len(s)]
            if s in ("e", "en", "es") and w.endswith("niss"):
                w = w[:-1]
    # step 2
    s = _longest(w, ("est", "en", "er", "st"))
    if s is not None and len(w) - len(s) >= r1:
        if s == "st":
            if len(w) >= 6 and w[-3] in _ST_ENDING:  # st-ending preceded by at least 3 letters
                w = w[:-2]
        else:
            w = w[: -len(s)]
    # step 3: d-suffixes
    s = _longest(w, ("isch", "lich", "heit", "keit", "end", "ung", "ig", "ik"))
    if s is not None and len(w) - len(s) >= r2:
        if s in ("end", "ung"):
            w = w[: -len(s)]
            if w.endswith("ig") and not w.endswith("eig") and len(w) - 2 >= r2:
                w = w[:-2]
        elif s in ("ig", "ik", "isch"):
            if not w[: -len(s)].endswith("e"):
                w = w[: -len(s)]
        elif s in ("lich", "heit"):
            w = w[: -len(s)]
            for x in ("er", "en"):
                if w.endswith(x) and len(w) - 2 >= r1:
                    w = w[:-2]
                    break
        else:  # keit
            w = w[:-4]
            for x in ("lich", "ig"):
                if w.endswith(x) and len(w) - len(x) >= r2:
                    w = w[: -len(x)]
                    break
    return w.replace("U", "u").replace("Y", "y").replace("ä", "a").replace("ö", "o").replace("ü", "u")
