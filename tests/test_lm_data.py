"""Tokenizers and padded SFT/preference batches (rljax.lm.tokenizers, rljax.lm.data)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rljax.lm.data import (
    LMDataError,
    PreferenceData,
    SFTData,
    load_preference_jsonl,
    load_sft_jsonl,
    tokenize_preferences,
    tokenize_sft,
)
from rljax.lm.tokenizers import ByteTokenizer, HFTokenizer, TokenizerMismatchError, check_vocab, load_tokenizer

try:
    import tokenizers
except ImportError:  # only the HFTokenizer tests need it
    tokenizers = None
needs_tokenizers = pytest.mark.skipif(tokenizers is None, reason="the `tokenizers` package is not installed")


# ---------------------------------------------------------------- tokenizers


def test_byte_tokenizer_round_trip_and_specials():
    tok = ByteTokenizer()
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (256, 257, 258, 259)
    text = "héllo, wörld ✓"
    ids = tok.encode(text, add_bos=True, add_eos=True)
    assert ids[0] == 257 and ids[-1] == 258 and ids[1:-1] == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special=False) == f"<bos>{text}<eos>"
    assert tok.encode("ab") == [97, 98]
    assert tok.decode([0xC3, 65]) == "\ufffdA"  # a cut multi-byte character is replaced, not an error
    with pytest.raises(ValueError, match="id 300 at position 1"):
        tok.decode([65, 300])


def _word_level(tmp_path):
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "[UNK]": 3, "hello": 4, "world": 5, "good": 6, "bye": 7}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<pad>", "<s>", "</s>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def _byte_level_bpe(path):
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["the cat sat on the mat"] * 20 + ["héllo wörld"], trainer)
    tok.save(str(path))
    return tok


@needs_tokenizers
def test_hf_word_level_from_directory(tmp_path):
    tok = load_tokenizer(_word_level(tmp_path))
    assert isinstance(tok, HFTokenizer)
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 8)
    assert tok.encode("hello world", add_bos=True, add_eos=True) == [1, 4, 5, 2]
    assert tok.encode("hello zebra") == [4, 3]
    assert tok.decode([1, 4, 5, 2, 0]) == "hello world"
    # Names given explicitly win; a name not in the vocabulary is an error.
    assert HFTokenizer(tmp_path / "tokenizer.json", eos_token="bye").eos_id == 7
    with pytest.raises(ValueError, match="eos_token '<eot>' is not in the vocabulary"):
        HFTokenizer(tmp_path / "tokenizer.json", eos_token="<eot>")
    # A model directory's special_tokens_map.json names the tokens.
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"eos_token": {"content": "bye"}}))
    assert load_tokenizer(tmp_path).eos_id == 7


@needs_tokenizers
def test_hf_byte_level_bpe_round_trip(tmp_path):
    _byte_level_bpe(tmp_path / "tokenizer.json")
    tok = load_tokenizer(str(tmp_path / "tokenizer.json"))
    endoftext = tok.backend.token_to_id("<|endoftext|>")
    # GPT-2 style: one <|endoftext|> serves as bos and eos, and there is no pad token.
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (endoftext, endoftext, None)
    assert tok.vocab_size == tok.backend.get_vocab_size(with_added_tokens=True)
    text = "the cat héllo wörld!"
    ids = tok.encode(text, add_eos=True)
    assert ids[-1] == endoftext and max(ids) < tok.vocab_size
    assert tok.decode(ids) == text
    # No pad token: data is padded with eos (masked out anyway).
    data = tokenize_sft(["the cat"], [" sat"], tok, 12)
    assert data.input_ids[0, -1] == endoftext and data.attention_mask[0, -1] == 0


def test_load_tokenizer_errors(tmp_path):
    assert isinstance(load_tokenizer("byte"), ByteTokenizer)
    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_tokenizer(str(missing))
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json"):
        load_tokenizer(tmp_path)


def test_check_vocab():
    tok = ByteTokenizer()
    check_vocab(tok, 259)
    check_vocab(tok, 320)  # padded embedding: fine
    with pytest.raises(TokenizerMismatchError, match=r"tokenizer .* vocab_size 259, the model has vocab_size 256") as info:
        check_vocab(tok, 256)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------- layout


def test_sft_padding_and_masks_exact():
    data = tokenize_sft(["ab", "c"], ["x", "yz"], ByteTokenizer(), 7)
    np.testing.assert_array_equal(data.input_ids, [
        [257, 97, 98, 120, 258, 256, 256],
        [257, 99, 121, 122, 258, 256, 256],
    ])
    np.testing.assert_array_equal(data.attention_mask, [[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(data.completion_mask, [[0, 0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0, 0]])
    assert data.input_ids.dtype == np.int32 and data.completion_mask.dtype == np.int32
    assert len(data) == 2 and data.max_length == 7


def test_preference_padding_from_token_ids():
    data = tokenize_preferences(
        [[5, 6], [7]], [[1], [2, 3]], [[4, 4, 4], [1]], None, 7, pad_id=0, eos_id=9,
        extras={"gold_margin": [0.5, -1.0]},
    )
    np.testing.assert_array_equal(data.chosen_input_ids, [[5, 6, 1, 9, 0, 0, 0], [7, 2, 3, 9, 0, 0, 0]])
    np.testing.assert_array_equal(data.rejected_input_ids, [[5, 6, 4, 4, 4, 9, 0], [7, 1, 9, 0, 0, 0, 0]])
    np.testing.assert_array_equal(data.chosen_completion_mask, [[0, 0, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(data.rejected_attention_mask, [[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(data.rejected_completion_mask, [[0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(data.extras["gold_margin"], [0.5, -1.0])
    # max_length=None pads to the longest row of either side.
    assert tokenize_preferences([[5, 6]], [[1]], [[4, 4, 4]], None, pad_id=0, eos_id=9).max_length == 6
    # The masks select the completion log-probs the §0 way (logits[:, :-1] predict ids[:, 1:]).
    chosen = data.side("chosen")
    assert isinstance(chosen, SFTData)
    targets = chosen.input_ids[:, 1:][chosen.completion_mask[:, 1:] == 1]
    np.testing.assert_array_equal(targets, [1, 9, 2, 3, 9])


def test_take_batches_and_pytree():
    data = tokenize_sft([[i] for i in range(10)], [[i, i] for i in range(10)], None, 4, pad_id=0, eos_id=99,
                        extras={"row": np.arange(10)})
    sub = data.take([3, 1])
    np.testing.assert_array_equal(sub.input_ids[:, 0], [3, 1])
    np.testing.assert_array_equal(sub.extras["row"], [3, 1])
    batches = list(data.batches(3, rng=0))
    assert len(batches) == 3 and all(b.input_ids.shape == (3, 4) for b in batches)  # drop_last: 9 of 10 rows
    rows = np.concatenate([b.extras["row"] for b in batches])
    assert len(set(rows.tolist())) == 9
    np.testing.assert_array_equal(rows, np.concatenate([b.extras["row"] for b in data.batches(3, rng=0)]))
    np.testing.assert_array_equal(np.concatenate([b.extras["row"] for b in data.batches(4, drop_last=False)]), np.arange(10))
    assert len(list(data.batches(2, rng=jax.random.key(1)))) == 5
    with pytest.raises(LMDataError, match="batch_size: 11 is larger than the 10 rows"):
        data.batches(11)
    total = jax.jit(lambda b: jnp.sum(b.input_ids * b.completion_mask))(data)  # a pytree
    assert int(total) == int(np.sum(data.input_ids * data.completion_mask))


# ---------------------------------------------------------------- errors


def test_overlong_prompt_names_row_and_lengths():
    tok = ByteTokenizer()
    with pytest.raises(LMDataError, match=r"row 1, field 'prompt': the prompt is 8 tokens \+ bos = 9, max_length is 8"):
        tokenize_sft(["ok", "x" * 8], ["a", "b"], tok, 8)
    with pytest.raises(LMDataError, match=r"row 0, field 'rejected': prompt 3 \(with bos\) \+ rejected 5 \+ eos 1 = 9 tokens, max_length is 8"):
        tokenize_preferences(["ab"], ["c"], ["ddddd"], tok, 8)


def test_empty_completion_and_other_row_errors():
    tok = ByteTokenizer()
    with pytest.raises(LMDataError, match="row 1, field 'completion': empty completion"):
        tokenize_sft(["a", "b"], ["c", ""], tok, 8)
    with pytest.raises(LMDataError, match="row 0, field 'chosen': empty completion"):
        tokenize_preferences([[1]], [[]], [[2]], None, 8, pad_id=0, eos_id=3)
    with pytest.raises(LMDataError, match="row 0, field 'prompt': empty prompt and no bos token"):
        tokenize_sft([[]], [[1]], None, 8, pad_id=0, eos_id=3)
    with pytest.raises(LMDataError, match="prompts has 2 rows, completions has 1"):
        tokenize_sft(["a", "b"], ["c"], tok, 8)
    with pytest.raises(LMDataError, match="row 0, field 'prompt': got a string but tokenizer is None"):
        tokenize_sft(["a"], [[1]], None, 8, pad_id=0, eos_id=3)
    with pytest.raises(LMDataError, match="row 0, field 'completion': token id 300 is outside the vocabulary"):
        tokenize_sft(["a"], [[300]], tok, 8)
    with pytest.raises(LMDataError, match="eos_id"):
        tokenize_sft([[1]], [[1]], None, 8, pad_id=0)


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_loading(tmp_path):
    path = _write(tmp_path / "prefs.jsonl", [
        json.dumps({"prompt": "Q: 1+1?", "chosen": " 2", "rejected": " 3", "gold_margin": 1.5}),
        "",
        "   ",
        json.dumps({"prompt": "Q: hi", "chosen": " hello", "rejected": " go away", "gold_margin": 0}),
    ])
    data = load_preference_jsonl(path, "byte", 32, extra_keys=("gold_margin",))
    assert isinstance(data, PreferenceData) and len(data) == 2
    np.testing.assert_array_equal(data.extras["gold_margin"], [1.5, 0.0])
    assert ByteTokenizer().decode(data.chosen_input_ids[1]) == "Q: hi hello"
    sft = load_sft_jsonl(_write(tmp_path / "sft.jsonl", [json.dumps({"prompt": "a", "completion": "b"})]), ByteTokenizer(), 8)
    np.testing.assert_array_equal(sft.input_ids[0, :4], [257, 97, 98, 258])


def test_jsonl_errors_name_file_line_and_key(tmp_path):
    good = json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"})
    bad_json = _write(tmp_path / "a.jsonl", [good, "", '{"prompt": "p", "chosen": "c",'])
    with pytest.raises(LMDataError, match=r"a\.jsonl, line 3: not valid JSON"):
        load_preference_jsonl(bad_json, "byte", 16)
    missing = _write(tmp_path / "b.jsonl", [good, json.dumps({"prompt": "p", "chosen": "c"})])
    with pytest.raises(LMDataError, match=r"b\.jsonl, line 2: missing key 'rejected'"):
        load_preference_jsonl(missing, "byte", 16)
    not_string = _write(tmp_path / "c.jsonl", [json.dumps({"prompt": "p", "chosen": 3, "rejected": "r"})])
    with pytest.raises(LMDataError, match=r"c\.jsonl, line 1, key 'chosen': expected a string, got int"):
        load_preference_jsonl(not_string, "byte", 16)
    not_object = _write(tmp_path / "d.jsonl", ["[1, 2]"])
    with pytest.raises(LMDataError, match=r"d\.jsonl, line 1: expected a JSON object"):
        load_sft_jsonl(not_object, "byte", 16)
    too_long = _write(tmp_path / "e.jsonl", [good, "", json.dumps({"prompt": "p" * 20, "chosen": "c", "rejected": "r"})])
    with pytest.raises(LMDataError, match=r"e\.jsonl, line 3, key 'prompt': the prompt is 20 tokens"):
        load_preference_jsonl(too_long, "byte", 16)
    empty = _write(tmp_path / "f.jsonl", [json.dumps({"prompt": "p", "completion": ""})])
    with pytest.raises(LMDataError, match=r"f\.jsonl, line 1, key 'completion': empty completion"):
        load_sft_jsonl(empty, "byte", 16)
    with pytest.raises(LMDataError, match=r"line 1, key 'gold_margin': expected a number"):
        load_preference_jsonl(_write(tmp_path / "g.jsonl", [json.dumps({"prompt": "p", "chosen": "c", "rejected": "r", "gold_margin": "x"})]),
                              "byte", 16, extra_keys=("gold_margin",))
