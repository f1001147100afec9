"""Full-text search benchmark on PostgreSQL: p50/p95 latency of eakte.search.search (the function
GET /v1/search runs) over N documents of generated German administrative text.

    .venv/bin/python bench/search.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Creates a database of its own (dropped afterwards unless --keep), loads N documents in Akten of
several departments (deterministic: same --seed, same corpus), indexes them with the same
tsvector expression and compound parts as eakte/search.py (bulk: COPY into a staging table, one
INSERT ... SELECT, GIN index built after the load), then runs rare, medium and very common terms,
compound-part queries, phrases and filtered queries as a clerk of two departments and as an
admin, and prints the latency per class. Target: p95 < 100 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from eakte import search  # noqa: E402
from eakte.access import Principal  # noqa: E402
from eakte.db import make_engine, make_session_factory, migrate  # noqa: E402

DEPARTMENTS = ["buergerbuero", "standesamt", "bauamt", "ordnungsamt", "sozialamt", "steueramt"]
SERVICES = {  # key: (name, department, file plan, subject compounds)
    "99115005012000": ("Meldebescheinigung", "buergerbuero", "32.10", ["Meldebescheinigung", "Wohnsitzanmeldung"]),
    "99006003001000": ("Geburtsurkunde", "standesamt", "34.10", ["Geburtsurkunde", "Geburtsanzeige"]),
    "99006004001000": ("Eheschließung", "standesamt", "34.20", ["Eheschließung", "Ehefähigkeitszeugnis"]),
    "99108008001000": ("Baugenehmigung", "bauamt", "63.10", ["Baugenehmigung", "Bauvoranfrage", "Bauzeichnung"]),
    "99108009001000": ("Abrissgenehmigung", "bauamt", "63.20", ["Abrissgenehmigung", "Rückbauanzeige"]),
    "99050012001000": ("Gewerbeanmeldung", "ordnungsamt", "32.20", ["Gewerbeanmeldung", "Gewerbeuntersagung"]),
    "99107010001000": ("Sondernutzungserlaubnis", "ordnungsamt", "32.30", ["Sondernutzungserlaubnis",
                                                                           "Parkausweis"]),
    "99021005001000": ("Hundesteuer", "steueramt", "21.10", ["Hundesteuer", "Hundesteuermarke"]),
    "99120002001000": ("Wohngeld", "sozialamt", "50.10", ["Wohngeldantrag", "Mietbescheinigung"]),
    "99010001001000": ("Aufenthaltsgenehmigung", "buergerbuero", "33.10", ["Aufenthaltsgenehmigung",
                                                                          "Aufenthaltstitel"]),
}
KINDS = ["Antrag", "Nachweis", "Scan", "Bescheid", "Urkunde", "Vermerk", "Schreiben"]
FIRST = ("Erika Max Jürgen Özlem Ayşe Björn Sören Günther Käthe Lübke Anja Dieter Fatma Jens Małgorzata Helga "
         "Thorsten Ülkü Sabine Wolfgang Zoë Frauke Mehmet Renate Horst Ingrid Lars Jana Tobias Marlene").split()
LAST = ("Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Koch Bauer Richter "
        "Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann Lange Schmitt Werner "
        "Krause Meier Lehmann Yılmaz Kowalski Nowak Öztürk Jäger Groß Weiß Böhm Köhler Fuchs").split()
STREETS = ("Hauptstraße Bahnhofstraße Schulstraße Gartenweg Lindenallee Kirchplatz Mühlenweg Am Marktplatz "
           "Goethestraße Schillerstraße Rosenweg Friedhofstraße Bergstraße Waldstraße Ringstraße").split()
CITIES = ["Musterstadt", "Beispielhausen", "Neustadt an der Weinstraße", "Bad Kötzting", "Oberursel", "Görlitz"]
FILLER = [
    "Wir bitten Sie, die Unterlagen innerhalb von vierzehn Tagen nachzureichen.",
    "Die Gebühr beträgt {fee} Euro und ist binnen eines Monats auf das Konto der Stadtkasse zu überweisen.",
    "Gegen diesen Bescheid kann innerhalb eines Monats nach Bekanntgabe Widerspruch erhoben werden.",
    "Der Widerspruch ist schriftlich oder zur Niederschrift bei der Stadtverwaltung einzulegen.",
    "Bitte geben Sie bei Rückfragen stets das Aktenzeichen an.",
    "Die Bearbeitungszeit beträgt derzeit etwa drei Wochen.",
    "Eine Kopie des Personalausweises sowie eine Meldebescheinigung liegen dem Antrag bei.",
    "Die Prüfung der eingereichten Nachweise hat ergeben, dass die Voraussetzungen erfüllt sind.",
    "Aufgrund fehlender Angaben kann über den Antrag derzeit nicht entschieden werden.",
    "Die Sprechzeiten des Bürgerbüros sind montags bis freitags von 8 bis 12 Uhr.",
    "Für die Terminvereinbarung nutzen Sie bitte das Onlineportal der Stadt.",
    "Der Nachweis über die Zahlung der Verwaltungsgebühr ist beizufügen.",
    "Die Zustellung erfolgt mit Postzustellungsurkunde.",
    "Das Grundstück befindet sich im Geltungsbereich des Bebauungsplans Nr. {n}.",
    "Die Stellungnahme des Gesundheitsamtes steht noch aus.",
    "Auf die Datenschutzhinweise gemäß Artikel 13 DSGVO wird hingewiesen.",
    "Die Steuerpflicht beginnt mit dem ersten Tag des auf die Anmeldung folgenden Monats.",
    "Bitte beachten Sie die Öffnungszeiten während der Feiertage.",
]
RARE_WORDS = ["Denkmalschutzbehörde", "Feuerwehrzufahrt", "Kampfmittelräumdienst", "Lärmschutzwand",
              "Regenwasserzisterne", "Taubenfütterungsverbot"]


def letter(rng: random.Random, service: tuple[str, str, str, list[str]], aktenzeichen: str) -> tuple[str, str, str]:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    street = f"{rng.choice(STREETS)} {rng.randint(1, 120)}"
    city = f"{rng.randint(10000, 99999)} {rng.choice(CITIES)}"
    subject = rng.choice(service[3])
    kind = rng.choice(KINDS)
    when = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 6 * 365))
    body = [f"{name}", street, city, f"{when:%d.%m.%Y}", f"Aktenzeichen {aktenzeichen}",
            f"Betreff: {subject} – {kind}", f"Sehr geehrte{'r Herr' if rng.random() < .5 else ' Frau'} {name.split()[1]},",
            f"hiermit {'beantrage ich' if kind == 'Antrag' else 'teilen wir Ihnen mit, dass Ihr Antrag auf'} "
            f"{subject} für das Anwesen {street} {'eingegangen ist' if kind != 'Antrag' else ''}."]
    for _ in range(rng.randint(4, 9)):
        body.append(rng.choice(FILLER).format(fee=rng.choice([10, 25, 45, 120, 350]), n=rng.randint(1, 400)))
    if rng.random() < 0.003:
        body.append(f"Die {rng.choice(RARE_WORDS)} wurde beteiligt.")
    body.append("Mit freundlichen Grüßen\nIm Auftrag\n" + f"{rng.choice(FIRST)} {rng.choice(LAST)}")
    return kind, f"{kind} {subject} {name}", "\n".join(body)


@dataclass
class Corpus:
    docs: int
    cases: int


def load(url: str, n_docs: int, seed: int) -> Corpus:
    rng = random.Random(seed)
    engine = make_engine(url)
    keys = list(SERVICES)
    n_cases = max(1, n_docs // 4)
    t0 = time.perf_counter()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("DROP INDEX IF EXISTS ix_dokument_search_tsv")  # built once after the load
        cur.execute("CREATE TEMP TABLE staging (dokument_id text, doc_date timestamptz, a text, b text, body text, "
                    "parts text, vorgang_id text, department text, service_key text, kind text, integrator text, "
                    "public boolean, created_by text, confidential boolean)")
        case_rows, akte_rows = [], []
        for i in range(n_cases):
            key = keys[i % len(keys)]
            name, dept, plan, _ = SERVICES[key]
            year = 2020 + i % 6
            az = f"{plan}-{year}-{i:06d}"
            akte_id = uuid.UUID(int=rng.getrandbits(128)).hex
            akte_rows.append((akte_id, az, plan, year, i, name, dept, i % 97 == 0))
            case_rows.append((f"case-{i:07d}", akte_id, az, key, name, dept, f"portal-{i % 5}"))
        with cur.copy("COPY akte (id, aktenzeichen, file_plan, year, seq, title, department, confidential, status, "
                      "retention_years, created_at, legal_hold, confidential_roles) FROM STDIN") as cp:
            for a in akte_rows:
                cp.write_row((*a, "open", 10, dt.datetime.now(dt.UTC), False, "[]"))
        with cur.copy("COPY vorgang (id, akte_id, aktenzeichen, service_key, service_name, department, integrator, "
                      "status, step, applicant, form, fingerprint, fee_cents, created_at, updated_at) FROM STDIN") as cp:
            for c in case_rows:
                cp.write_row((*c, "awaiting_decision", "decision", "{}", "{}", "x", 0, dt.datetime.now(dt.UTC),
                              dt.datetime.now(dt.UTC)))
        staging = []
        with cur.copy("COPY dokument (id, idempotency_key, akte_id, vorgang_id, kind, title, filename, content_type, "
                      "channel, sender, public, text, received_at, created_by, created_at) FROM STDIN") as cp:
            for d in range(n_docs):
                c = d % n_cases
                akte_id, az, _, _, _, name, dept, _ = akte_rows[c]
                kind, title, body = letter(rng, SERVICES[case_rows[c][3]], az)
                received = dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=rng.randint(0, 6 * 525_600))
                doc_id = uuid.UUID(int=rng.getrandbits(128)).hex
                sender = body.split("\n", 1)[0]
                cp.write_row((doc_id, f"bench:{d}", akte_id, case_rows[c][0], kind, title, "brief.pdf",
                              "application/pdf", "post", sender, d % 3 == 0, body, received, "bench", received))
                f = search._Fields(f"{title} {kind} {az}", f"{sender} {name} {dept} {name}", body)
                staging.append((doc_id, received, f.a, f.b, f.body, f.parts(), case_rows[c][0], dept,
                                case_rows[c][3], kind, case_rows[c][6], d % 3 == 0, "bench", akte_rows[c][7]))
                if (d + 1) % 20_000 == 0:
                    print(f"  generated {d + 1:>7} documents  {time.perf_counter() - t0:6.1f} s", flush=True)
        with cur.copy("COPY staging FROM STDIN") as sp:
            for row in staging:
                sp.write_row(row)
        t1 = time.perf_counter()
        cur.execute("INSERT INTO dokument_search (dokument_id, doc_date, vorgang_id, department, service_key, kind, "
                    "integrator, public, created_by, confidential, confidential_roles, akte_closed, is_letter, tsv) "
                    "SELECT dokument_id, doc_date, vorgang_id, department, service_key, kind, integrator, public, "
                    "created_by, confidential, '[]', false, false, "
                    f"{search.PG_TSVECTOR_SQL.format(a='a', b='b', body='body', parts='parts')} FROM staging")
        t2 = time.perf_counter()
        cur.execute("CREATE INDEX ix_dokument_search_tsv ON dokument_search USING gin (tsv)")
        raw.commit()
        t3 = time.perf_counter()
        raw.driver_connection.autocommit = True
        raw.cursor().execute("VACUUM ANALYZE")
        print(f"  loaded in {t1 - t0:.1f} s, tsvectors {t2 - t1:.1f} s, GIN index {t3 - t2:.1f} s, "
              f"vacuum/analyze {time.perf_counter() - t3:.1f} s", flush=True)
    finally:
        raw.close()
        engine.dispose()
    return Corpus(docs=n_docs, cases=n_cases)


QUERIES: dict[str, list[str]] = {
    "rare": ["Kampfmittelräumdienst", "Taubenfütterungsverbot", "Lärmschutzwand", "Regenwasserzisterne"],
    "medium": ["Hundesteuermarke", "Ehefähigkeitszeugnis", "Gewerbeuntersagung", "Bauvoranfrage", "Yılmaz Görlitz"],
    "common": ["Antrag", "Gebühr", "Widerspruch", "Stadt", "Aktenzeichen"],
    "compound part": ["Genehmigung", "Steuer", "Urkunde", "Anmeldung", "Bescheinigung"],
    "phrase": ['"Gebühr beträgt"', '"Bad Kötzting"', 'Baugenehmigung "Am Marktplatz"'],
    "filtered": ["Antrag|department=bauamt", "Widerspruch|kind=Bescheid", "Genehmigung|from=2023-01-01|to=2023-06-30"],
}


def run_queries(url: str, rounds: int) -> dict[str, list[float]]:
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    principals = [Principal("clerk-bench", ("clerk",), ("bauamt", "buergerbuero")), Principal("admin", ("admin",))]
    timings: dict[str, list[float]] = {k: [] for k in QUERIES}
    with sessions() as s:  # warm-up: lexicon, stemmer caches, connection
        search.search(s, principals[0], "Antrag")
    for r in range(rounds):
        for cls, queries in QUERIES.items():
            for spec in queries:
                q, *opts = spec.split("|")
                kw = dict(o.split("=") for o in opts)
                filters = search.SearchFilters(
                    department=kw.get("department"), kind=kw.get("kind"),
                    date_from=dt.date.fromisoformat(kw["from"]) if "from" in kw else None,
                    date_to=dt.date.fromisoformat(kw["to"]) if "to" in kw else None)
                p = principals[r % len(principals)]
                with sessions() as s, s.begin():
                    t = time.perf_counter()
                    res = search.search(s, p, q, filters)
                    timings[cls].append((time.perf_counter() - t) * 1000)
                if r == 0:
                    print(f"  {cls:<14} {spec:<42} {res.total:>5}{'+' if res.total_is_lower_bound else ' '} "
                          f"hits, {res.order:<9} {timings[cls][-1]:7.1f} ms", flush=True)
    engine.dispose()
    return timings


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(p / 100 * len(v)) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", required=True, help="a PostgreSQL server; the database in it is only used "
                                                          "to create and drop the benchmark's own")
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the benchmark database (name printed)")
    ap.add_argument("--reuse", action="store_true", help="use --database-url as it is (already loaded)")
    args = ap.parse_args()
    base = make_url(args.database_url)
    if base.get_backend_name() != "postgresql":
        sys.exit("bench/search.py measures PostgreSQL: give a postgresql+psycopg:// URL")
    name = f"aktenlauf_bench_search_{uuid.uuid4().hex[:8]}"
    url = args.database_url if args.reuse else base.set(database=name).render_as_string(hide_password=False)
    admin = make_engine(base.render_as_string(hide_password=False))
    if not args.reuse:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        if not args.reuse:
            print(f"database {name}: migrating, loading {args.docs} documents", flush=True)
            migrate(url)
            load(url, args.docs, args.seed)
        engine = make_engine(url)
        with engine.connect() as c:
            size = c.execute(text("SELECT pg_size_pretty(pg_total_relation_size('dokument_search')), "
                                  "pg_size_pretty(pg_relation_size('ix_dokument_search_tsv')), "
                                  "(SELECT avg(pg_column_size(tsv))::int FROM dokument_search)")).one()
        engine.dispose()
        print(f"index: dokument_search {size[0]} (GIN {size[1]}), average tsvector {size[2]} bytes (stored inline)")
        print(f"queries ({args.rounds} rounds, clerk of 2 departments / admin alternating; first round shown):")
        timings = run_queries(url, args.rounds)
        everything = [x for v in timings.values() for x in v]
        print()
        print(f"{'class':<16}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
        for cls, v in timings.items():
            print(f"{cls:<16}{len(v):>6}{statistics.median(v):>10.1f}{pct(v, 95):>10.1f}{max(v):>10.1f}")
        p95 = pct(everything, 95)
        print(f"{'all':<16}{len(everything):>6}{statistics.median(everything):>10.1f}{p95:>10.1f}"
              f"{max(everything):>10.1f}")
        print(f"\n{args.docs} documents: p50 {statistics.median(everything):.1f} ms, p95 {p95:.1f} ms "
              f"(target p95 < 100 ms: {'met' if p95 < 100 else 'NOT met'})")
    finally:
        if not args.reuse and not args.keep:
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        elif args.keep:
            print(f"kept database {name}")
        admin.dispose()


if __name__ == "__main__":
    main()
