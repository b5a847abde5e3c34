"""JSONL plumbing: resuming an output file."""

from __future__ import annotations


def test_resume_reads_records_whose_text_holds_unicode_line_separators(tmp_path) -> None:
    from llmblend.data.jsonl import append_jsonl, resume_jsonl

    out = tmp_path / "out.jsonl"
    append_jsonl(out, [{"id": "a", "text": "one\u2028two\u0085three\x1cfour"}, {"id": "b", "text": "x"}])
    assert resume_jsonl(out, "id") == {"a", "b"}


def test_count_lines_bounds_the_records_of_plain_and_compressed_parts(tmp_path) -> None:
    import gzip
    import lzma

    from llmblend.data.jsonl import count_lines, iter_lines

    plain, packed, squeezed = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz", tmp_path / "c.jsonl.xz"
    plain.write_text('{"id": "1"}\n\n{"id": "2"}\n', encoding="utf-8")  # a blank line counts
    packed.write_bytes(gzip.compress(b'{"id": "3"}\n{"id": "4"}'))  # no newline at the end
    squeezed.write_bytes(lzma.compress(b"\n".join(b'{"id": "%d"}' % i for i in range(5, 105)) + b"\n"))
    assert count_lines(plain) == 3 and count_lines(packed) == 2 and count_lines(squeezed) == 100
    assert count_lines([plain, packed, squeezed], chunk_bytes=7) == 105
    records = sum(1 for path in (plain, packed, squeezed) for _ in iter_lines(path))
    assert records <= count_lines([plain, packed, squeezed])
