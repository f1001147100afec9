"""The decompression checks of intake.sniff.inspect_file (issue 6: hostile PDFs).

Every compressed stream of a PDF is decoded incrementally and counted; a stream that expands
past its cap, or a file whose streams together do, is refused as ``decompression_bomb`` in
milliseconds and with a few MiB of memory. The PDFs are built here byte by byte (a PDF library
would decode the bomb while saving it); the decoders are cross-checked against qpdf's, and
every corpus file of ../shared/corpus/scans keeps the verdict it had before these checks.
"""

from __future__ import annotations

import base64
import binascii
import random
import time
import tracemalloc
import zlib
from pathlib import Path

import pikepdf
import pytest

from intake import sniff
from intake.sniff import IntakeLimits, IntakeRejected, inspect_file

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "scans"
MIB = 1024 * 1024


# --------------------------------------------------------------------------- building PDFs by hand


def build_pdf(content: bytes, content_dict: bytes = b"", extra: list[bytes] | None = None,
              xobjects: bytes = b"") -> bytes:
    """A one-page PDF; ``content`` is stored as given (already encoded per ``content_dict``)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << "
        + xobjects + b" >> >>",
        b"<< /Length %d %s >>\nstream\n" % (len(content), content_dict) + content + b"\nendstream",
        *(extra or []),
    ]
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def image_object(width: int, height: int, data: bytes, filters: bytes, extra: bytes = b"") -> bytes:
    return (b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
            b"/BitsPerComponent 8 /Filter %s %s /Length %d >>\nstream\n"
            % (width, height, filters, extra, len(data)) + data + b"\nendstream")


def deflate_spaces(size: int) -> bytes:
    """``size`` bytes of spaces, deflated at level 9 in 1 MiB steps (ratio ~1000)."""
    c = zlib.compressobj(9)
    block = b" " * MIB
    return b"".join(c.compress(block) for _ in range(size // MIB)) + c.flush()


def lzw_encode(data: bytes, early: int = 1) -> bytes:
    """A plain LZW encoder as PDF writers do it (MSB first), small inputs only."""
    table = {bytes([i]): i for i in range(256)}
    codes, word = [256], b""
    for value in data:
        candidate = word + bytes([value])
        if candidate in table:
            word = candidate
            continue
        codes.append(table[word])
        table[candidate] = len(table) + 2
        word = bytes([value])
        if len(table) + 2 >= 4094:  # full: start over, as writers do
            codes.append(256)
            table = {bytes([i]): i for i in range(256)}
    if word:
        codes.append(table[word])
    return pack_lzw(codes + [257], early)


def pack_lzw(codes: list[int], early: int = 1) -> bytes:
    """Pack codes with the widths a decoder uses (it learns each entry one code late)."""
    bits, nbits, width, table, first = 0, 0, 9, 258, True
    out = bytearray()
    for code in codes:
        bits, nbits = (bits << width) | code, nbits + width
        while nbits >= 8:
            nbits -= 8
            out.append((bits >> nbits) & 0xFF)
            bits &= (1 << nbits) - 1
        if code == 256:
            width, table, first = 9, 258, True
            continue
        if not first and table < 4096:
            table += 1
        first = False
        if width < 12 and table + early >= 1 << width:
            width += 1
    if nbits:
        out.append((bits << (8 - nbits)) & 0xFF)
    return bytes(out)


def lzw_zero_bomb(cycles: int) -> bytes:
    """Zeros, coded as ever longer runs: each cycle of 3800 codes (~5.7 KB) is ~7 MB."""
    codes: list[int] = []
    for _ in range(cycles):
        codes += [256, 0, *range(258, 258 + 3800)]
    return pack_lzw(codes + [257])


def run_length_encode(data: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while pos < len(data):
        run = 1
        while pos + run < len(data) and run < 128 and data[pos + run] == data[pos]:
            run += 1
        if run > 1:
            out += bytes([257 - run, data[pos]])
        else:
            out += bytes([0, data[pos]])
        pos += run
    return bytes(out + b"\x80")


def write(tmp_path: Path, data: bytes, name: str = "doc.pdf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refusal(path: Path, limits: IntakeLimits | None = None) -> str | None:
    try:
        inspect_file(path, limits or IntakeLimits())
    except IntakeRejected as rejected:
        return rejected.code
    return None


TEXT = b"BT /F1 12 Tf 72 720 Td (Sehr geehrte Damen und Herren) Tj ET\n" * 200


# --------------------------------------------------------------------------- bombs


def test_a_double_deflated_content_bomb_is_refused_in_milliseconds_with_little_memory(tmp_path: Path) -> None:
    once = deflate_spaces(256 * MIB)
    bomb = write(tmp_path, build_pdf(zlib.compress(once, 9), b"/Filter [/FlateDecode /FlateDecode]"))
    assert bomb.stat().st_size < 4096
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(IntakeRejected) as rejected:
            inspect_file(bomb, IntakeLimits())
        took = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rejected.value.code == "decompression_bomb"
    assert "decompression bomb" in rejected.value.reason and "sender" in rejected.value.reason
    assert took < 0.5, f"{took:.2f} s"
    assert peak < 32 * MIB, f"peak {peak / MIB:.0f} MiB"


def test_a_single_deflated_content_stream_of_64_mib_from_64_kib_is_a_bomb(tmp_path: Path) -> None:
    path = write(tmp_path, build_pdf(deflate_spaces(64 * MIB), b"/Filter /FlateDecode"))
    assert refusal(path) == "decompression_bomb"


def test_a_bomb_without_a_zlib_header_is_found_too(tmp_path: Path) -> None:
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = b"".join(raw.compress(b" " * MIB) for _ in range(64)) + raw.flush()
    assert refusal(write(tmp_path, build_pdf(data, b"/Filter /FlateDecode"))) == "decompression_bomb"


def test_a_bomb_under_hex_armour_is_found(tmp_path: Path) -> None:
    armoured = binascii.hexlify(zlib.compress(deflate_spaces(64 * MIB), 9)) + b">"
    path = write(tmp_path, build_pdf(armoured, b"/Filter [/ASCIIHexDecode /FlateDecode /FlateDecode]"))
    assert refusal(path) == "decompression_bomb"


def test_a_bomb_in_a_form_xobject_nobody_draws_is_found(tmp_path: Path) -> None:
    """Every stream of the file is checked, not only what the pages use."""
    bomb = zlib.compress(deflate_spaces(64 * MIB), 9)
    unused = (b"<< /Type /XObject /Subtype /Form /BBox [0 0 1 1] /Filter [/FlateDecode /FlateDecode] "
              b"/Length %d >>\nstream\n" % len(bomb) + bomb + b"\nendstream")
    path = write(tmp_path, build_pdf(zlib.compress(TEXT), b"/Filter /FlateDecode", extra=[unused]))
    assert refusal(path) == "decompression_bomb"


def test_an_lzw_bomb_is_refused(tmp_path: Path) -> None:
    bomb = lzw_zero_bomb(cycles=4)  # ~23 KB -> ~29 MB, ratio ~1260
    assert len(bomb) < 32 * 1024
    started = time.perf_counter()
    assert refusal(write(tmp_path, build_pdf(bomb, b"/Filter /LZWDecode"))) == "decompression_bomb"
    assert time.perf_counter() - started < 2.0


def test_run_length_after_deflate_cannot_hide_a_bomb(tmp_path: Path) -> None:
    runs = b"\x81 " * (4 * MIB)  # each pair: 128 spaces -> 1 GiB
    stored = zlib.compress(runs, 9)
    path = write(tmp_path, build_pdf(stored, b"/Filter [/FlateDecode /RunLengthDecode]"))
    assert refusal(path) == "decompression_bomb"


def test_an_image_that_expands_far_past_its_declared_size_is_a_bomb(tmp_path: Path) -> None:
    """100 x 100 gray pixels declare 10 KB; this stream inflates to 32 MiB."""
    image = image_object(100, 100, deflate_spaces(32 * MIB), b"/FlateDecode")
    path = write(tmp_path, build_pdf(b"q 100 0 0 100 0 0 cm /Im0 Do Q", extra=[image],
                                     xobjects=b"/XObject << /Im0 5 0 R >>"))
    assert refusal(path) == "decompression_bomb"


def test_many_streams_together_are_held_to_the_total_cap(tmp_path: Path) -> None:
    """Each stream alone is fine (6 MiB of text); together they pass a small total cap."""
    stream = zlib.compress(TEXT * 500, 9)
    extra = [b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"] * 4
    path = write(tmp_path, build_pdf(stream, b"/Filter /FlateDecode", extra=extra))
    assert refusal(path) is None
    assert refusal(path, IntakeLimits(max_inflated_bytes=20 * MIB)) == "decompression_bomb"


# --------------------------------------------------------------------------- what is not a bomb


def test_a_normal_pdf_with_text_and_a_large_white_image_passes(tmp_path: Path) -> None:
    """A blank 3000 x 4000 page image deflates ~1000:1 and is still only its declared 12 MB."""
    white = zlib.compress(b"\xff" * (3000 * 4000), 9)
    image = image_object(3000, 4000, white, b"/FlateDecode")
    path = write(tmp_path, build_pdf(zlib.compress(b"q 595 0 0 842 0 0 cm /Im0 Do Q\n" + TEXT),
                                     b"/Filter /FlateDecode", extra=[image],
                                     xobjects=b"/XObject << /Im0 5 0 R >>"))
    info = inspect_file(path, IntakeLimits())
    assert info.pages == 1 and info.max_page_pixels == 12_000_000


def test_a_predictor_image_is_allowed_its_row_bytes(tmp_path: Path) -> None:
    rows = b"".join(b"\x02" + b"\x00" * 3000 for _ in range(2000))  # PNG "up" rows
    image = image_object(3000, 2000, zlib.compress(rows, 9), b"/FlateDecode",
                         b"/DecodeParms << /Predictor 15 /Columns 3000 >>")
    path = write(tmp_path, build_pdf(b"/Im0 Do", extra=[image], xobjects=b"/XObject << /Im0 5 0 R >>"))
    assert refusal(path) is None


def test_a_damaged_deflate_stream_is_not_called_a_bomb(tmp_path: Path) -> None:
    broken = zlib.compress(TEXT)[:-40] + b"\x00garbage"
    assert refusal(write(tmp_path, build_pdf(broken, b"/Filter /FlateDecode"))) is None


@pytest.mark.parametrize(("name", "encode"), [
    ("/FlateDecode", lambda d: zlib.compress(d, 6)),
    ("/LZWDecode", lzw_encode),
    ("/RunLengthDecode", run_length_encode),
    ("/ASCIIHexDecode", lambda d: binascii.hexlify(d) + b">"),
    ("/ASCII85Decode", lambda d: base64.a85encode(d, wrapcol=64) + b"~>"),
])
def test_the_decoders_agree_with_qpdf(tmp_path: Path, name: str, encode) -> None:  # type: ignore[no-untyped-def]
    noise = random.Random(6).randbytes(40_000)  # fills the LZW table: 9-12 bit codes and clears
    data = TEXT + bytes(range(256)) * 40 + b"\x00" * 5000 + b"z!" * 300 + noise + TEXT
    path = write(tmp_path, build_pdf(encode(data), b"/Filter " + name.encode()))
    with pikepdf.open(path) as pdf:
        stream = pdf.pages[0].obj.Contents
        expected = stream.read_bytes(pikepdf.StreamDecodeLevel.specialized)
        ours = b"".join(bytes(p) for p in sniff._decode_chain(sniff._pieces(stream.read_raw_bytes()),
                                                               sniff._filter_chain(stream), 1 << 40))
    assert expected == data
    assert ours == expected
    assert refusal(path) is None


def test_the_lzw_bomb_decodes_as_qpdf_decodes_it(tmp_path: Path) -> None:
    bomb = lzw_zero_bomb(cycles=1)
    path = write(tmp_path, build_pdf(bomb, b"/Filter /LZWDecode"))
    with pikepdf.open(path) as pdf:
        expected = pdf.pages[0].obj.Contents.read_bytes()
    ours = b"".join(sniff._lzw(sniff._pieces(bomb), None))
    assert len(expected) == 1 + sum(range(2, 3802)) and set(expected) == {0}
    assert ours == expected


# --------------------------------------------------------------------------- the corpus


#: inspect_file's verdict on every corpus file, as before the decompression checks
CORPUS_VERDICTS = {
    "2400dpi.pdf": None, "blank.pdf": None, "c02-22.pdf": None, "cardinal.pdf": None,
    "ccitt.pdf": None, "encrypted-ownerpw.pdf": None, "encrypted-userpw.pdf": "encrypted",
    "enormous.pdf": None, "epson.pdf": None, "francais.pdf": None, "hugemono.pdf": "image_too_large",
    "invalid.pdf": "unreadable_pdf", "jbig2.pdf": None, "kcs.pdf": None, "linn.pdf": None,
    "linn.txt": "not_a_supported_file", "livecycle.pdf": "unsupported_pdf", "masks.pdf": None,
    "multipage.pdf": None, "negzero.pdf": None, "no_contents.pdf": None, "overlay.pdf": None,
    "README.md": "not_a_supported_file", "rotated_skew.pdf": None, "skew.pdf": None,
    "trivial.pdf": None, "typewriter.png": None,
}


def test_the_verdict_table_covers_the_whole_corpus() -> None:
    assert sorted(CORPUS_VERDICTS) == sorted(p.name for p in CORPUS.iterdir())


@pytest.mark.parametrize("name", sorted(CORPUS_VERDICTS))
def test_every_corpus_file_keeps_its_verdict(name: str) -> None:
    started = time.perf_counter()
    assert refusal(CORPUS / name) == CORPUS_VERDICTS[name]
    assert time.perf_counter() - started < 5.0  # enormous.pdf: 243 MB of image verified, ~0.8 s


@pytest.mark.parametrize("name", sorted(n for n, v in CORPUS_VERDICTS.items() if v is None and n.endswith(".pdf")))
def test_corpus_streams_stay_under_half_their_caps(name: str) -> None:
    """Headroom: no real stream comes near a cap (the closest, enormous.pdf's image, is at 1/2)."""
    with pikepdf.open(CORPUS / name) as pdf:
        for obj in pdf.objects:
            if not isinstance(obj, pikepdf.Stream):
                continue
            filters = sniff._filter_chain(obj)
            if not filters or filters[0][0] not in sniff._DECODERS:
                continue
            stored = obj.read_raw_bytes()
            cap = sniff._stream_cap(obj, len(stored))
            decoded = sum(len(p) for p in sniff._decode_chain(sniff._pieces(stored), filters, cap))
            assert decoded <= cap // 2, (obj.objgen, decoded, cap)


def test_a_bomb_in_an_owner_password_pdf_is_found(tmp_path: Path) -> None:
    """Such a file opens without a password and is processed, so its streams are checked
    decrypted (qpdf's raw stream data is decrypted, still encoded)."""
    plain = write(tmp_path, build_pdf(zlib.compress(deflate_spaces(32 * MIB), 9),
                                      b"/Filter [/FlateDecode /FlateDecode]"), "plain.pdf")
    locked = tmp_path / "locked.pdf"
    with pikepdf.open(plain) as pdf:  # (qpdf recompresses it as one flate layer: still ~1000:1)
        pdf.save(locked, encryption=pikepdf.Encryption(owner="geheim", user="", R=6))
    with pikepdf.open(locked) as pdf:
        assert pdf.is_encrypted
        assert len(pdf.pages[0].obj.Contents.read_raw_bytes()) < 64 * 1024
    assert refusal(locked) == "decompression_bomb"


def test_an_lzw_stream_with_early_change_0_is_decoded_as_qpdf_does(tmp_path: Path) -> None:
    """/DecodeParms of a single filter is a dictionary, not an array."""
    data = bytes(range(256)) * 8 + TEXT  # enough codes to pass the 9 -> 10 bit switch
    late = lzw_encode(data, early=0)
    path = write(tmp_path, build_pdf(late, b"/Filter /LZWDecode /DecodeParms << /EarlyChange 0 >>"))
    with pikepdf.open(path) as pdf:
        stream = pdf.pages[0].obj.Contents
        expected = stream.read_bytes()
        ours = b"".join(sniff._decode_chain(sniff._pieces(late), sniff._filter_chain(stream), 1 << 40))
    assert expected == data and ours == data
