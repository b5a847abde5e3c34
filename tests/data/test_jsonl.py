"""JSONL plumbing: resuming an output file."""

from __future__ import annotations


def test_resume_reads_records_whose_text_holds_unicode_line_separators(tmp_path) -> None:
    from llmblend.data.jsonl import append_jsonl, resume_jsonl

    out = tmp_path / "out.jsonl"
    append_jsonl(out, [{"id": "a", "text": "one\u2028two\u0085three\x1cfour"}, {"id": "b", "text": "x"}])
    assert resume_jsonl(out, "id") == {"a", "b"}
