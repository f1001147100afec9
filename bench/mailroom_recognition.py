"""Mailroom recognition benchmark: how often does a scanned letter find its case, and where does it go otherwise?

Renders German letters (umlauts; letterhead left or right; the Aktenzeichen in the subject line, in the body, in a
table or broken across two lines; some carrying the QR code of one of our documents, some the applicant reference
number, some nothing), rasterises them at 300 dpi, degrades them (speckle noise, skew up to ±3°, fax 200x100 dpi
1-bit, blur, JPEG), OCRs each with the real pipeline (intake.ocr.run_ocr, one job at a time) and measures:

* detection rate per reference kind and per degradation (Aktenzeichen: exact value found / recoverable through
  ``near_variants``; QR verification code; applicant reference number);
* false positives: any reference found on letters that carry none, and wrong values on letters that carry one;
* classification of the reference-free letters (one topic per catalog service): top-1, top-3, and how many are
  routed automatically at several thresholds with what precision.

    .venv/bin/python bench/mailroom_recognition.py [--letters N] [--seed S] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from PIL import Image, ImageChops, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from eakte.render import qr_image, verification_code
from intake.barcodes import decode_pdf_barcodes, verification_codes_from_payloads
from intake.catalog import load_catalog
from intake.classify import Classifier
from intake.ocr import run_ocr
from intake.reference import applicant_ref_for, find_applicant_refs, find_reference_candidates, near_variants
from intake.sniff import IntakeLimits

DEGRADATIONS = ["clean", "noise", "skew", "fax", "blur", "jpeg"]
KIND_SHARE = [("none", 0.4), ("az", 0.3), ("qr", 0.15), ("aref", 0.15)]
PLACEMENTS = ["subject", "body", "table", "broken"]
VERIFY_BASE = "https://service.musterstadt.example/v1/verify/"

FIRST = ["Jürgen", "Sabine", "Özlem", "Thomas", "Käthe", "Mehmet", "Anna-Lena", "Björn", "Ursula", "Lukas", "Zoë"]
LAST = ["Müller", "Schäfer", "Weiß", "Yılmaz", "Köhler", "Groß", "Becker", "Öztürk", "Hoffmann", "Straßburger"]
STREETS = ["Lindenstraße", "Am Mühlbach", "Goethestraße", "Südring", "Kirchgässchen", "Hauptstraße", "Fährweg"]

#: Letter bodies per service (LeiKa key), written like citizens write, with umlauts.
BODIES: dict[str, list[str]] = {
    "99115005012000": [
        "für meinen neuen Arbeitgeber benötige ich eine Meldebescheinigung über meinen Hauptwohnsitz. "
        "Ich bin im März in die Lindenstraße umgezogen und habe mich bereits umgemeldet.",
        "bitte stellen Sie mir eine Bescheinigung über meine Anmeldung in der Wohnung aus. Die "
        "Wohnungsgeberbestätigung meines Vermieters lege ich bei.",
        "ich bitte um eine erweiterte Meldebescheinigung. Ich brauche den Nachweis meines Wohnsitzes für die "
        "Bank, da ich zugezogen bin.",
        "nach meinem Umzug nach Musterstadt benötige ich für die Familienkasse einen Nachweis meiner "
        "Meldeadresse. Könnten Sie mir diesen zusenden?",
    ],
    "99006003001000": [
        "ich bitte um Ausstellung einer Geburtsurkunde für meine Tochter, geboren am 12.04.2019 in Musterstadt. "
        "Eine Kopie meines Personalausweises liegt bei.",
        "für meine Eheschließung benötige ich eine beglaubigte Abschrift aus dem Geburtenregister. Ich bin "
        "am 3. Mai 1988 in Ihrer Stadt geboren.",
        "mein Sohn wurde letzten Monat im Klinikum geboren. Bitte senden Sie uns drei Geburtsurkunden für "
        "Elterngeld und Krankenkasse.",
        "ich benötige für das Rentenverfahren meiner Mutter eine Urkunde über ihre Geburt im Jahr 1951. Das "
        "Standesamt Musterstadt hat die Geburt damals beurkundet.",
    ],
    "99021005001000": [
        "hiermit möchte ich meinen Hund anmelden. Es handelt sich um einen Mischling aus dem Tierheim, die "
        "Chipnummer lautet 276098106543210. Den Nachweis der Hundehaftpflicht füge ich bei.",
        "wir haben seit dem 1. Juni einen Welpen (Labrador). Bitte schicken Sie uns die Hundesteuermarke und "
        "den Bescheid zur Hundesteuer.",
        "ich bin mit meinem Hund nach Musterstadt gezogen und bitte um Anmeldung zur Hundesteuer. Rasse: "
        "Dackel, geboren 2021.",
        "leider habe ich die Hundemarke meines Hundes verloren. Bitte senden Sie mir eine neue Steuermarke zu.",
    ],
    "99050012104000": [
        "ich mache mich zum 1. September als Friseurin selbständig und möchte hiermit mein Gewerbe anmelden. "
        "Der Betrieb befindet sich in der Hauptstraße 12.",
        "wir eröffnen ein kleines Café und bitten um die Gewerbeanmeldung. Ein Auszug aus dem Handelsregister "
        "liegt bei.",
        "hiermit melde ich meine selbstständige Tätigkeit als Elektriker an. Bitte senden Sie mir den "
        "Gewerbeschein zu.",
        "unsere Firma verlegt den Betriebssitz nach Musterstadt. Bitte nehmen Sie die Ummeldung des Gewerbes "
        "vor; unser Unternehmen ist im Handelsregister eingetragen.",
    ],
    "99107010001000": [
        "in der Goethestraße vor Haus Nr. 8 ist ein tiefes Schlagloch, in dem gestern ein Radfahrer gestürzt "
        "ist. Bitte beseitigen Sie den Schaden schnell.",
        "seit zwei Wochen ist die Straßenlaterne am Südring defekt. Abends ist der Gehweg völlig dunkel und "
        "gefährlich.",
        "am Spielplatz Am Mühlbach ist die Schaukel kaputt und die Rutsche beschädigt. Kinder können sich "
        "verletzen.",
        "hinter dem Sportplatz wurde Sperrmüll illegal abgelagert: Matratzen, Reifen und Farbeimer. Bitte "
        "lassen Sie den Müll entfernen.",
    ],
    "99036005002000": [
        "ich möchte das Wunschkennzeichen MS-JK 2024 für meinen neuen PKW reservieren. Die Zulassung ist für "
        "nächste Woche geplant.",
        "bitte reservieren Sie für mein Motorrad das Kennzeichen MS-AB 77. Falls es vergeben ist, wäre mir "
        "MS-AB 78 recht.",
        "für die Zulassung unseres Firmenfahrzeugs hätten wir gern ein Nummernschild mit den Buchstaben MS-KL "
        "und einer beliebigen Zahl.",
        "ich bitte um Reservierung eines Wunschkennzeichens mit der Kombination MS-ÖZ 12 für mein Auto.",
    ],
}
REPLY_BODIES = [
    "bezugnehmend auf Ihr Schreiben sende ich Ihnen die fehlenden Unterlagen. Bitte ordnen Sie diese meinem "
    "Antrag zu.",
    "vielen Dank für Ihre Nachricht. Anbei erhalten Sie die Kopie meines Personalausweises, wie gewünscht.",
    "leider kann ich den Termin nicht wahrnehmen. Bitte teilen Sie mir einen neuen Termin mit.",
    "ich habe Ihren Bescheid erhalten und möchte eine Frage zur Gebühr stellen. Ist eine Ratenzahlung möglich?",
]


@dataclass
class Letter:
    n: int
    kind: str
    degradation: str
    service_key: str
    placement: str = ""
    expected: str | None = None


def _fonts() -> tuple[str, str]:
    import reportlab
    d = Path(reportlab.__file__).parent / "fonts"
    for name, f in (("BenchVera", "Vera.ttf"), ("BenchVeraBd", "VeraBd.ttf")):
        if name not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(name, str(d / f)))
    return "BenchVera", "BenchVeraBd"


def _wrap(text: str, font: str, size: float, width: float) -> list[str]:
    lines: list[str] = []
    for para in text.split("\n"):
        cur = ""
        for word in para.split(" "):
            trial = f"{cur} {word}".strip()
            if pdfmetrics.stringWidth(trial, font, size) > width and cur:
                lines.append(cur)
                cur = word
            else:
                cur = trial
        lines.append(cur)
    return lines


def render_letter(letter: Letter, rng: random.Random, az_for_service: dict[str, str]) -> bytes:
    """One A4 letter as a PDF."""
    font, bold = _fonts()
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=A4, invariant=1)
    w, h = A4
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    sender = [name, f"{rng.choice(STREETS)} {rng.randint(1, 80)}", f"{rng.randint(10000, 99999)} Musterstadt"]
    right = letter.n % 2 == 1
    c.setFont(font, 10)
    for i, line in enumerate(sender):
        if right:
            c.drawRightString(w - 20 * mm, h - 20 * mm - i * 5 * mm, line)
        else:
            c.drawString(25 * mm, h - 20 * mm - i * 5 * mm, line)
    for i, line in enumerate(["Stadt Musterstadt", "Bürgerbüro / Poststelle", "Rathausplatz 1", "12345 Musterstadt"]):
        c.drawString(25 * mm, h - 50 * mm - i * 5 * mm, line)
    date = f"Musterstadt, {rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.2026"
    c.drawRightString(w - 20 * mm, h - 80 * mm, date)
    if letter.kind == "none":
        body = rng.choice(BODIES[letter.service_key])
        subject = "Antrag"
    else:
        body = rng.choice(REPLY_BODIES)
        subject = "Ihr Schreiben"
    ref_line = ""
    table: list[tuple[str, str]] = []
    if letter.kind == "az":
        az = letter.expected or ""
        if letter.placement == "subject":
            subject = f"Ihr Zeichen: {az}"
        elif letter.placement == "body":
            body = f"in der Angelegenheit mit dem Aktenzeichen {az} wende ich mich an Sie. " + body
        elif letter.placement == "table":
            table = [("Antragsteller", name), ("Aktenzeichen", az), ("Datum", date.split(", ")[1])]
        else:  # broken across two lines
            ref_line = "broken"
    elif letter.kind == "aref":
        ref = letter.expected or ""
        if letter.n % 2:
            subject = f"Meine Vorgangsnummer: {ref}"
        else:
            body = body + f" Meine Vorgangsnummer lautet {ref}."
    c.setFont(bold, 11)
    c.drawString(25 * mm, h - 95 * mm, subject)
    c.setFont(font, 11)
    y = h - 110 * mm
    lines = ["Sehr geehrte Damen und Herren,", "", *_wrap(body, font, 11, w - 45 * mm)]
    if ref_line == "broken":
        az = letter.expected or ""
        head, tail = az[:11], az[11:]
        lines += ["", f"Zur Zuordnung: mein Vorgang hat das Zeichen {head}", f"{tail}, bitte beachten Sie dies."]
    for line in lines:
        c.drawString(25 * mm, y, line)
        y -= 6 * mm
    if table:
        y -= 4 * mm
        for k, v in table:
            c.rect(25 * mm, y - 2 * mm, 45 * mm, 7 * mm)
            c.rect(70 * mm, y - 2 * mm, 70 * mm, 7 * mm)
            c.drawString(27 * mm, y, k)
            c.drawString(72 * mm, y, v)
            y -= 7 * mm
    y -= 8 * mm
    for line in ["Mit freundlichen Grüßen", "", name]:
        c.drawString(25 * mm, y, line)
        y -= 6 * mm
    if letter.kind == "qr":
        # a copy of our notice comes back: its QR code of the verification URL, 25 mm like eakte.render
        c.drawImage(ImageReader(qr_image(VERIFY_BASE + (letter.expected or "")).convert("L")),
                    w - 45 * mm, 25 * mm, 25 * mm, 25 * mm)
        c.setFont(font, 7)
        c.drawString(w - 75 * mm, 20 * mm, "Echtheit prüfen: QR-Code scannen")
    c.showPage()
    c.save()
    return buf.getvalue()


def rasterise(pdf: Path, dpi: int = 300) -> Image.Image:
    prefix = pdf.with_suffix("")
    subprocess.run(["pdftoppm", "-gray", "-r", str(dpi), "-singlefile", str(pdf), str(prefix)], check=True)
    with Image.open(prefix.with_suffix(".pgm")) as img:
        return img.copy()


def degrade(img: Image.Image, how: str, rng: random.Random, out: Path) -> Path:
    """Write the degraded scan next to ``out`` (suffix by format) and return its path."""
    if how == "noise":
        noise = Image.effect_noise(img.size, 50).point(lambda v: 0 if v < 28 else 255)
        img = ImageChops.darker(img, noise)
        img.save(p := out.with_suffix(".png"), dpi=(300, 300))
    elif how == "skew":
        angle = rng.choice([-3.0, -2.2, 2.0, 3.0])
        img = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=255)
        img.save(p := out.with_suffix(".png"), dpi=(300, 300))
    elif how == "fax":
        w, h = img.size
        img = img.resize((w * 2 // 3, h // 3), Image.Resampling.BOX).point(lambda v: 0 if v < 150 else 255).convert("1")
        img.save(p := out.with_suffix(".tif"), dpi=(200, 100), compression="group4")
    elif how == "blur":
        img = img.filter(ImageFilter.GaussianBlur(1.6))
        img.save(p := out.with_suffix(".png"), dpi=(300, 300))
    elif how == "jpeg":
        w, h = img.size
        img = img.resize((w * 2 // 3, h * 2 // 3), Image.Resampling.LANCZOS)
        img.save(p := out.with_suffix(".jpg"), dpi=(200, 200), quality=22)
    else:
        img.save(p := out.with_suffix(".png"), dpi=(300, 300))
    return p


def plan(n: int, seed: int, services: list[str], file_plans: dict[str, str]) -> list[Letter]:
    rng = random.Random(seed)
    counts = {k: max(1, round(n * share)) for k, share in KIND_SHARE}
    counts["none"] = max(1, n - sum(v for k, v in counts.items() if k != "none"))
    letters: list[Letter] = []
    i = 0
    for kind, _ in KIND_SHARE:
        for j in range(counts[kind]):
            svc = services[j % len(services)]
            letter = Letter(n=i, kind=kind, degradation=DEGRADATIONS[i % len(DEGRADATIONS)], service_key=svc)
            if kind == "az":
                letter.placement = PLACEMENTS[(j // len(DEGRADATIONS) + j) % len(PLACEMENTS)]
                letter.expected = f"{file_plans[svc]}-{rng.choice([2025, 2026])}-{rng.randint(1, 999999):06d}"
            elif kind == "qr":
                letter.expected = verification_code(b"bench-secret", f"doc-{seed}-{i}")
            elif kind == "aref":
                letter.expected = applicant_ref_for(f"case-{seed}-{i}")
            letters.append(letter)
            i += 1
    return letters


@dataclass
class Result:
    letter: Letter
    ocr_ok: bool
    found: bool = False
    near: bool = False
    wrong: list[str] | None = None
    refs_on_none: list[str] | None = None
    top1: bool = False
    top3: bool = False
    score: float = 0.0
    ocr_s: float = 0.0


def evaluate(letter: Letter, text: str, pdf: Path | None, classifier: Classifier) -> Result:
    r = Result(letter=letter, ocr_ok=True)
    cands = find_reference_candidates(text)
    values = [c.value for c in cands]
    arefs = find_applicant_refs(text)
    qr = verification_codes_from_payloads(
        [x for page in (decode_pdf_barcodes(pdf).values() if pdf else []) for x in page])
    if letter.kind == "az":
        r.found = letter.expected in values
        r.near = r.found or any(letter.expected in near_variants(v) for v in values)
        r.wrong = [v for v in values if v != letter.expected] + arefs + qr
    elif letter.kind == "qr":
        r.found = letter.expected in qr
        r.wrong = [v for v in qr if v != letter.expected] + values + arefs
    elif letter.kind == "aref":
        r.found = letter.expected in arefs
        r.wrong = [v for v in arefs if v != letter.expected] + values + qr
    else:
        r.refs_on_none = values + arefs + qr
        ranked = classifier.rank(text, top=3)
        keys = [s.service_key for s in ranked]
        r.top1 = bool(keys) and keys[0] == letter.service_key
        r.top3 = letter.service_key in keys
        r.score = ranked[0].score if ranked else 0.0
    return r


def pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.0f}%)" if b else "-"


def report(results: list[Result], names: dict[str, str]) -> None:
    print("\nReference detection (found = exact value read; near = recoverable with one-digit near_variants)")
    print(f"{'kind':<8}" + "".join(f"{d:>12}" for d in DEGRADATIONS) + f"{'all':>14}{'near':>14}")
    for kind in ("az", "qr", "aref"):
        row = [x for x in results if x.letter.kind == kind]
        cells = []
        for d in DEGRADATIONS:
            sub = [x for x in row if x.letter.degradation == d]
            cells.append(f"{sum(x.found for x in sub)}/{len(sub)}" if sub else "-")
        near = pct(sum(x.near for x in row), len(row)) if kind == "az" else ""
        print(f"{kind:<8}" + "".join(f"{c:>12}" for c in cells) + f"{pct(sum(x.found for x in row), len(row)):>14}{near:>14}")
    az = [x for x in results if x.letter.kind == "az"]
    print("Aktenzeichen by placement: " + ", ".join(
        f"{p} {pct(sum(x.found for x in az if x.letter.placement == p), sum(x.letter.placement == p for x in az))}"
        for p in PLACEMENTS))
    none = [x for x in results if x.letter.kind == "none"]
    refd = [x for x in results if x.letter.kind != "none"]
    fp = [x for x in none if x.refs_on_none]
    print(f"\nFalse positives: letters without reference with any reference found {pct(len(fp), len(none))}"
          + (f" {[x.refs_on_none for x in fp]}" if fp else ""))
    wrong = [x for x in refd if x.wrong]
    print(f"Letters with a reference where an additional/wrong value was read {pct(len(wrong), len(refd))}"
          + (f" {[x.wrong for x in wrong]}" if wrong else ""))
    print(f"\nClassification of letters without reference: top-1 {pct(sum(x.top1 for x in none), len(none))}, "
          f"top-3 {pct(sum(x.top3 for x in none), len(none))}")
    for t in (0.5, 0.6, 0.75, 0.9):
        auto = [x for x in none if x.score >= t]
        print(f"  threshold {t:.2f}: routed automatically {pct(len(auto), len(none))}, "
              f"of those correct {pct(sum(x.top1 for x in auto), len(auto))}")
    print("  per service top-1: " + ", ".join(
        f"{names[k]} {sum(x.top1 for x in none if x.letter.service_key == k)}/"
        f"{sum(x.letter.service_key == k for x in none)}" for k in names))
    by_d = ", ".join(f"{d} {pct(sum(x.top1 for x in none if x.letter.degradation == d), sum(x.letter.degradation == d for x in none))}"
                     for d in DEGRADATIONS)
    print(f"  top-1 per degradation: {by_d}")
    failed = [x for x in results if not x.ocr_ok]
    if failed:
        print(f"OCR failed on {len(failed)} letters")


async def run(n: int, seed: int, verbose: bool) -> None:
    catalog = load_catalog(ROOT / "intake" / "catalog.yaml")
    services = sorted(catalog.services)
    names = {k: catalog.services[k].name for k in services}
    classifier = Classifier(catalog.services.values())
    letters = plan(n, seed, services, {k: catalog.services[k].file_plan for k in services})
    rng = random.Random(seed + 1)
    limits = IntakeLimits()
    results: list[Result] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mailroom-bench-") as tmp:
        for letter in letters:
            d = Path(tmp) / f"l{letter.n:03d}"
            d.mkdir()
            pdf = d / "letter.pdf"
            pdf.write_bytes(render_letter(letter, rng, {}))
            scan = degrade(rasterise(pdf), letter.degradation, rng, d / "scan")
            t0 = time.monotonic()
            outcome = await run_ocr(scan, d / "work", limits)
            ocr_s = time.monotonic() - t0
            if outcome.status != "processed":
                results.append(Result(letter=letter, ocr_ok=False, ocr_s=ocr_s))
                print(f"  #{letter.n:02d} {letter.kind:<5} {letter.degradation:<6} OCR failed: {outcome.code}")
                continue
            r = evaluate(letter, outcome.text, outcome.output_path, classifier)
            r.ocr_s = ocr_s
            results.append(r)
            if letter.kind != "none" and not r.found and verbose:
                hint = [ln for ln in outcome.text.splitlines() if re.search(r"eichen|nummer|Zuordnung|\d{4}", ln)]
                print(f"     expected {letter.expected}; OCR: {hint[:4]}")
            mark = ("ok" if r.found else "MISS") if letter.kind != "none" else ("top1" if r.top1 else "miss")
            print(f"  #{letter.n:02d} {letter.kind:<5} {letter.degradation:<6} {letter.placement:<8} {mark:<5} "
                  f"ocr {ocr_s:4.1f}s", flush=True)
    elapsed = time.monotonic() - started
    print(f"\n{len(letters)} letters, seed {seed}, {elapsed:.0f} s total, "
          f"OCR {sum(r.ocr_s for r in results) / max(1, len(results)):.1f} s per letter")
    report(results, names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--letters", type=int, default=60)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="12 letters")
    ap.add_argument("--verbose", action="store_true", help="show the OCR text around missed references")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(run(12 if args.quick else args.letters, args.seed, args.verbose))


if __name__ == "__main__":
    main()
