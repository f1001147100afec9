"""The classifier routes unreferenced letters by the catalog's rules and learns from the mailroom's decisions."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageFilter
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from intake.catalog import Catalog, CatalogError, load_catalog
from intake.classify import DEFAULT_THRESHOLD, MAX_TERMS, Classifier, LearnedExample, terms

CATALOG = Path(__file__).resolve().parents[2] / "intake" / "catalog.yaml"
HUND, MELDE, GEWERBE, MANGEL, KFZ, GEBURT = ("99021005001000", "99115005012000", "99050012104000",
                                             "99107010001000", "99036005002000", "99006003001000")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(CATALOG)


def test_terms_fold_umlauts_drop_stop_words_and_are_bounded() -> None:
    t = terms("Sehr geehrte Damen und Herren, die Straßenlaterne vor unserem Haus ist DEFEKT. Die Laterne "
              "flackert. Grüße aus der Müllerstraße")
    assert t[0] == "laterne" or "laterne" in t
    assert {"strassenlaterne", "defekt", "muellerstrasse", "flackert"} <= set(t)
    assert not {"die", "und", "sehr", "geehrte", "damen"} & set(t)
    many = " ".join(f"wort{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}{chr(97 + i // 676)}" for i in range(1000))
    assert len(terms(many)) == MAX_TERMS
    assert terms("Hunde-\nsteuer") == ["hundesteuer"]  # hyphenated across a line


@pytest.mark.parametrize(("text", "key"), [
    ("hiermit möchte ich meinen neuen Hund anmelden, Chipnummer 276098106543210.", HUND),
    ("Ich benötige eine Meldebescheinigung für meinen Arbeitgeber nach dem Umzug.", MELDE),
    ("Anmeldung eines Gewerbes: ich mache mich als Friseurin selbständig.", GEWERBE),
    ("Vor Haus 8 ist ein tiefes Schlagloch und die Straßenlaterne ist defekt.", MANGEL),
    ("Bitte reservieren Sie das Wunschkennzeichen MS-AB 123 für meinen PKW.", KFZ),
    ("Ich bitte um eine beglaubigte Abschrift aus dem Geburtenregister meiner Tochter.", GEBURT),
])
def test_clear_letters_are_routed_above_the_threshold(catalog: Catalog, text: str, key: str) -> None:
    (best, *rest) = Classifier(catalog.services.values()).rank(text)
    assert best.service_key == key and best.department == catalog.services[key].department
    assert best.score >= DEFAULT_THRESHOLD and all(r.score < 0.2 for r in rest)
    assert best.reasons


def test_unclear_letters_stay_below_the_threshold(catalog: Catalog) -> None:
    c = Classifier(catalog.services.values())
    assert c.rank("Sehr geehrte Damen und Herren, ich habe eine Frage zu meiner Rechnung.") == []
    weak = c.rank("Ich bitte um einen Termin wegen meiner Wohnung.")
    assert weak and weak[0].score < DEFAULT_THRESHOLD
    mixed = c.rank("Ich melde meinen Hund an und brauche außerdem eine Meldebescheinigung für die Hundesteuer "
                   "und eine Meldebescheinigung für den Wohnsitz.")
    assert mixed[0].score < 0.95 and {s.service_key for s in mixed[:2]} == {HUND, MELDE}


def test_ocr_garbled_keywords_are_recognised_fuzzily(catalog: Catalog) -> None:
    (best, *_) = Classifier(catalog.services.values()).rank(
        "Betr.: Hundestener für rneinen Hnnd. Die Hundehaftpfiicht ist abgeschlossen, die Hundernarke fehlt.")
    assert best.service_key == HUND and best.score >= DEFAULT_THRESHOLD
    assert any(r.startswith("similar word") for r in best.reasons)


PARKING = [
    "ich beantrage einen Anwohnerparkausweis für meinen PKW mit dem Kennzeichen MS-AB 12, da ich in der "
    "Altstadt wohne.",
    "bitte stellen Sie mir einen Bewohnerparkausweis aus. Mein Fahrzeug mit dem Kennzeichen MS-K 4 steht in der "
    "Parkzone B.",
    "für die Parkzone Altstadt benötige ich einen Anwohnerparkausweis, Kennzeichen MS-XY 99, Fahrzeugschein liegt bei.",
    "Verlängerung meines Anwohnerparkausweises für die Parkzone A, das Kennzeichen meines Autos ist MS-P 321.",
]


def test_clerk_decisions_reroute_a_letter_type_the_catalog_misroutes(catalog: Catalog) -> None:
    new_letter = ("Sehr geehrte Damen und Herren, ich bin zugezogen und beantrage einen Anwohnerparkausweis für "
                  "die Parkzone Altstadt. Kennzeichen meines Fahrzeugs: MS-QQ 7.")
    plain = Classifier(catalog.services.values())
    assert plain.rank(new_letter)[0].service_key == KFZ  # the catalog alone sends it to the plate reservation
    learned = [LearnedExample(terms=terms(t), service_key=None, department="buergerbuero") for t in PARKING[:3]]
    taught = Classifier(catalog.services.values(), learned).rank(new_letter)
    assert (taught[0].service_key, taught[0].department) == (None, "buergerbuero")
    assert taught[0].score >= DEFAULT_THRESHOLD
    assert any(r.startswith("learned") for r in taught[0].reasons)
    # letters of the catalog's own kinds are not dragged along
    assert Classifier(catalog.services.values(), learned).rank(
        "Bitte reservieren Sie das Wunschkennzeichen MS-AB 123 für meinen neuen PKW.")[0].service_key == KFZ


def test_one_decision_does_not_yet_override_clear_catalog_evidence(catalog: Catalog) -> None:
    learned = [LearnedExample(terms=terms(PARKING[0]), service_key=None, department="buergerbuero")]
    text = "Bitte reservieren Sie das Wunschkennzeichen MS-AB 12 für meinen PKW, Zulassung nächste Woche."
    assert Classifier(catalog.services.values(), learned).rank(text)[0].service_key == KFZ


def test_ranking_is_deterministic(catalog: Catalog) -> None:
    learned = [LearnedExample(terms=terms(t), service_key=MELDE, department=None) for t in PARKING]
    text = "Anwohnerparkausweis, Hund, Gewerbe und Meldebescheinigung"
    a = Classifier(catalog.services.values(), learned).rank(text, top=5)
    b = Classifier(catalog.services.values(), list(reversed(learned))).rank(text, top=5)
    assert a == b and len(a) <= 5
    assert all(0.0 <= s.score <= 1.0 for s in a)
    learned_hit = next(s for s in a if s.service_key == MELDE)
    assert learned_hit.department == "buergerbuero"  # a service-only decision gets its department


@pytest.mark.parametrize(("mutation", "message"), [
    ("      regex: ['hunde\\s*steuer'", "      regex: ['hunde(steuer'"),
    ("      fuzzy: [hundesteuer,", "      fuzzy: [hunde steuer,"),
    ("      all: [[hund, anmelden],", "      all: [[hund],"),
    ("    classification:\n      regex: ['hunde", "    classification:\n      regexp: ['x']\n      regex: ['hunde"),
])
def test_a_bad_classification_block_refuses_the_catalog(tmp_path: Path, mutation: str, message: str) -> None:
    text = CATALOG.read_text(encoding="utf-8")
    assert mutation in text
    bad = tmp_path / "catalog.yaml"
    bad.write_text(text.replace(mutation, message, 1), encoding="utf-8")
    with pytest.raises(CatalogError):
        load_catalog(bad)


def test_every_service_has_classification_rules(catalog: Catalog) -> None:
    for s in catalog.services.values():
        assert s.classification.regex and s.classification.any, s.name


def test_real_ocr_of_a_blurred_letter_is_classified(catalog: Catalog, tmp_path: Path) -> None:
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=A4)
    c.setFont("Helvetica", 11)
    lines = ["Özlem Yılmaz, Fährweg 3, 12345 Musterstadt", "", "Stadt Musterstadt, Gewerbeamt", "",
             "Sehr geehrte Damen und Herren,", "hiermit melde ich meine selbstständige Tätigkeit als Elektrikerin an.",
             "Der Betrieb befindet sich in der Hauptstraße 12. Bitte senden Sie mir den Gewerbeschein zu.",
             "Mit freundlichen Grüßen"]
    for i, line in enumerate(lines):
        c.drawString(25 * mm, 260 * mm - i * 7 * mm, line)
    c.showPage()
    c.save()
    (tmp_path / "l.pdf").write_bytes(buf.getvalue())
    subprocess.run(["pdftoppm", "-gray", "-r", "200", "-singlefile", str(tmp_path / "l.pdf"), str(tmp_path / "p")],
                   check=True)
    with Image.open(tmp_path / "p.pgm") as img:
        img.filter(ImageFilter.GaussianBlur(1.2)).save(tmp_path / "scan.jpg", quality=30, dpi=(200, 200))
    text = subprocess.run(["tesseract", str(tmp_path / "scan.jpg"), "-", "-l", "deu"], check=True,
                          capture_output=True, timeout=120).stdout.decode()
    (best, *_) = Classifier(catalog.services.values()).rank(text)
    assert best.service_key == GEWERBE and best.score >= DEFAULT_THRESHOLD, text
