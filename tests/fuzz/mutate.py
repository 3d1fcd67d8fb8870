"""Mutated inputs: well-formed samples with bytes flipped, inserted, deleted,
repeated, or runs of digits and lengths blown up, as a fuzzer would."""

from __future__ import annotations

from hypothesis import strategies as st

# Values that break naive conversions: huge numbers, signs, NULs, bad UTF-8.
NASTY = [b"9" * 5000, b"-1", b"0", b"\x00", b"\xff\xfe", b"\xed\xa0\x80", b"\r\n", b"\n",
         b"\r", b" ", b"=", b":", b"<", b">", b"@", b"\"", b"\\", b"%", b"[", b"]",
         b"\x1b", b"\x7f", b"\xc3\xa9", b"18446744073709551616", b"1e9", b"0x10"]


@st.composite
def mutated(draw: st.DrawFn, samples: list[bytes], max_mutations: int = 8) -> bytes:
    """One of ``samples`` with up to ``max_mutations`` random edits."""
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(0, max_mutations))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.integers(0, 5))
        if kind == 0 and data and pos < len(data):          # flip a byte
            data[pos] = draw(st.integers(0, 255))
        elif kind == 1:                                      # insert random bytes
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == 2 and data:                             # delete a run
            end = min(len(data), pos + draw(st.integers(1, 16)))
            del data[pos:end]
        elif kind == 3:                                      # insert a nasty value
            data[pos:pos] = draw(st.sampled_from(NASTY))
        elif kind == 4 and data:                             # repeat a run
            end = min(len(data), pos + draw(st.integers(1, 32)))
            data[pos:pos] = data[pos:end] * draw(st.integers(2, 50))
        else:                                                # truncate
            del data[pos:]
    return bytes(data)


def inputs(samples: list[bytes]) -> st.SearchStrategy[bytes]:
    """Mutated samples and plain random bytes, mixed."""
    return st.one_of(mutated(samples), st.binary(max_size=512))


def text_inputs(samples: list[str]) -> st.SearchStrategy[str]:
    """The same for parsers that take text (surrogate escapes for bad UTF-8)."""
    return inputs([s.encode("utf-8", "surrogateescape") for s in samples]).map(
        lambda b: b.decode("utf-8", "surrogateescape"))
