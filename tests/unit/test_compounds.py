"""German compound splitting and the Snowball stemmer that full-text search relies on."""

from __future__ import annotations

import time

import pytest

from eakte import compounds, search
from eakte.stemmer import stem


@pytest.mark.parametrize(("word", "parts"), [
    ("Baugenehmigung", ["bau", "genehmigung"]),
    ("Baugenehmigungen", ["bau", "genehmigungen"]),
    ("Baugenehmigungsverfahren", ["bau", "genehmigung", "verfahren"]),
    ("Meldebescheinigung", ["melde", "bescheinigung"]),
    ("Personalausweis", ["personal", "ausweis"]),
    ("Hauptstraße", ["haupt", "straße"]),
    ("Bürgermeister", ["bürger", "meister"]),
])
def test_a_compound_splits_into_its_parts(word: str, parts: list[str]) -> None:
    assert compounds.split(word) == parts


@pytest.mark.parametrize(("word", "parts"), [
    ("Geburtsurkunde", ["geburt", "urkunde"]),            # Fugen-s, and "urkunde" not "kunde"
    ("Aufenthaltsgenehmigung", ["aufenthalt", "genehmigung"]),
    ("Standesamt", ["stand", "amt"]),                      # Fugen-es
    ("Zahlungserinnerung", ["zahlung", "erinnerung"]),
    ("Hundesteuer", ["hund", "steuer"]),                   # Fugen-e
    ("Familienname", ["familie", "name"]),                 # Fugen-n
])
def test_linking_elements_are_not_part_of_the_parts(word: str, parts: list[str]) -> None:
    assert compounds.split(word) == parts


@pytest.mark.parametrize("word", [
    "Verfahren", "Ausweis", "Bescheid", "Bescheinigung", "Verwaltung", "Abteilung", "Unterschrift",
    "Erbschaft", "Gemeinde", "Beitrag", "Termin", "Urkunde", "Vorname", "Bearbeitung", "Staatsangehörigkeit",
])
def test_simple_and_prefixed_words_stay_whole(word: str) -> None:
    assert compounds.split(word) == [word.lower()]
    assert compounds.parts(word) == []


def test_short_words_numbers_and_mixed_tokens_are_never_split() -> None:
    assert compounds.split("Amt") == ["amt"]
    assert compounds.split("2026") == ["2026"]
    assert compounds.split("A4Blatt") == ["a4blatt"]


def test_splitting_is_fast_enough_for_indexing() -> None:
    compounds.lexicon()
    words = [f"{m}{h}" for m in ("bau", "melde", "hunde", "geburts", "park", "wohn", "grund", "feuer")
             for h in ("genehmigung", "steuer", "urkunde", "antrag", "bescheid", "ausweis", "amt", "gebühr")]
    compounds._split.cache_clear()
    start = time.perf_counter()
    for w in words:
        compounds.split(w)
    per_word = (time.perf_counter() - start) / len(words)
    assert per_word < 0.002, f"{per_word * 1000:.2f} ms per uncached word"


@pytest.mark.parametrize(("word", "expected"), [
    ("genehmigungen", "genehm"), ("gebühren", "gebuhr"), ("bedürfnissen", "bedurfnis"), ("häuslich", "hauslich"),
    ("straße", "strass"), ("aufeinanderfolgenden", "aufeinanderfolg"), ("kenntnisse", "kenntnis"),
])
def test_the_stemmer_gives_postgresqls_german_stems(word: str, expected: str) -> None:
    # expected values are PostgreSQL's ts_lexize('german_stem', word); a sample of 30 000 lexicon
    # words matched it exactly when the stemmer was written
    assert stem(word) == expected


def test_a_searched_part_is_highlighted_in_the_whole_compound() -> None:
    wanted = {stem("genehmigung")}
    assert search.highlight_all("Antrag auf Baugenehmigung", wanted) == "Antrag auf <mark>Baugenehmigung</mark>"
    snippet = search.snippets("Die Aufenthaltsgenehmigung <b>liegt</b> vor.", wanted)
    assert snippet == ["Die <mark>Aufenthaltsgenehmigung</mark> &lt;b&gt;liegt&lt;/b&gt; vor"]


@pytest.mark.parametrize("q", ['"', '""', "   ", "die der und", "(*) & | !", "-"])
def test_a_query_without_searchable_words_is_refused(q: str) -> None:
    from aktenlauf.errors import InvalidInput

    with pytest.raises(InvalidInput):
        search.parse_query(q)


def test_query_syntax_characters_are_literal_words() -> None:
    terms = search.parse_query('Bau* OR "Antrag auf" NOT x:y (Gebühr')
    assert [t.tokens for t in terms] == [("bau",), ("or",), ("antrag", "auf"), ("not",), ("x", "y"), ("gebühr",)]
    assert search._fts5_query(terms) == '"bau" AND "or" AND "antrag" AND "not" AND "x y" AND "gebuhr"'
