"""SFT and preference data as padded batches: numpy ``int32`` arrays, right padded.

One sequence (``T = max_length``)::

    tokens           [bos?]  prompt ...  completion ...  eos   pad ... pad
    attention_mask     1       1 ...       1 ...          1     0 ... 0
    completion_mask    0       0 ...       1 ...          1     0 ... 0

so, with the shared conventions of ``papers/preference-lm.md`` §0, the token
log-probs of a completion are
``take_along_axis(log_softmax(logits[:, :-1]), input_ids[:, 1:, None])[..., 0] * completion_mask[:, 1:]``
and its sequence log-prob is their sum (the eos is scored: the model learns to stop).

* :class:`SFTData`: ``input_ids``, ``attention_mask``, ``completion_mask``, each ``[N, T]``.
* :class:`PreferenceData`: ``chosen_*`` and ``rejected_*`` versions of the three,
  each ``[N, T]``; a pair's chosen and rejected share the prompt.
* Both carry ``extras``: ``{name: [N, ...] array}`` of per-row values
  (``gold_margin``, a group id, ...) that follow the rows through ``take`` and ``batches``.
* Both are JAX pytrees (``jax.jit(loss)(params, batch)`` works), support
  ``len``, ``take(indices)`` and ``batches(batch_size, rng)``.

Inputs are strings (tokenised with the tokenizer) or token-id lists (then the
tokenizer may be ``None`` and ``pad_id``/``eos_id`` are given). Nothing is
truncated: a row that does not fit in ``max_length`` raises :class:`LMDataError`
naming the row, the field and the lengths.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np


class LMDataError(ValueError):
    """Bad SFT/preference data. ``row``, ``field`` and ``detail`` are set where they apply."""

    def __init__(self, message: str, *, row: int | None = None, field: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.row, self.field, self.detail = row, field, detail


def _row_error(row: int, field: str, detail: str) -> LMDataError:
    return LMDataError(f"row {row}, field {field!r}: {detail}", row=row, field=field, detail=detail)


# ---------------------------------------------------------------- containers


def _permutation(rng: Any, n: int) -> np.ndarray:
    """Row order for one epoch: ``None`` keeps the order; an int seed, a numpy Generator or a JAX key shuffles."""
    if rng is None:
        return np.arange(n)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng)).permutation(n)
    if isinstance(rng, np.random.Generator):
        return rng.permutation(n)
    if isinstance(rng, jax.Array):
        return np.asarray(jax.random.permutation(rng, n))
    raise TypeError(f"rng: expected None, an int seed, a numpy Generator or a JAX PRNG key, got {type(rng).__name__}")


class _Rows:
    """Shared row operations; subclasses are dataclasses with ``[N, T]`` fields ``_FIELDS`` and ``extras``."""

    _FIELDS: tuple[str, ...] = ()
    _MASKS: tuple[tuple[str, str, str], ...] = ()  # (ids, attention_mask, completion_mask) triples

    def __len__(self) -> int:
        return int(np.shape(getattr(self, self._FIELDS[0]))[0])

    @property
    def max_length(self) -> int:
        """``T``, the padded length."""
        return int(np.shape(getattr(self, self._FIELDS[0]))[1])

    def arrays(self) -> dict[str, Any]:
        """``{field: [N, T] array}`` plus the extras under their own names."""
        out = {name: getattr(self, name) for name in self._FIELDS}
        for name, value in self.extras.items():
            if name in out:
                raise LMDataError(f"extras: key {name!r} clashes with a data field; rename it")
            out[name] = value
        return out

    def take(self, indices):
        """The rows at ``indices`` (ints, in ``[-N, N)``), extras included."""
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu" or idx.ndim != 1:
            raise LMDataError(f"take: expected a 1-D array of integer row indices, got dtype {idx.dtype} shape {idx.shape}")
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = idx[(idx < -n) | (idx >= n)][0]
            raise LMDataError(f"take: row index {int(bad)} is out of range for {n} rows")
        return dataclasses.replace(
            self,
            **{name: np.asarray(getattr(self, name))[idx] for name in self._FIELDS},
            extras={k: np.asarray(v)[idx] for k, v in self.extras.items()},
        )

    def batches(self, batch_size: int, rng: Any = None, drop_last: bool = True) -> Iterator:
        """One epoch of batches of ``batch_size`` rows (same class, arrays ``[batch_size, T]``).

        ``rng``: ``None`` keeps the row order; an int seed, a ``numpy.random.Generator``
        or a JAX key shuffles. ``drop_last=True`` drops the final short batch, so
        every batch has the same shape (one compilation); asking for a batch
        larger than the data with ``drop_last=True`` is an error, not an empty epoch.
        """
        n = len(self)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise LMDataError(f"batch_size: expected a positive int, got {batch_size!r}")
        if drop_last and batch_size > n:
            raise LMDataError(
                f"batch_size: {batch_size} is larger than the {n} rows, so with drop_last=True no batch would come out"
            )
        order = _permutation(rng, n)
        stop = n - n % batch_size if drop_last else n
        return (self.take(order[start:start + batch_size]) for start in range(0, stop, batch_size))

    def validate(self) -> None:
        """Raise :class:`LMDataError` (naming the field and row) unless the arrays follow the layout."""
        shape = None
        for name in self._FIELDS:
            value = getattr(self, name)
            if not isinstance(value, np.ndarray):
                raise LMDataError(f"field {name!r}: expected a numpy array, got {type(value).__name__}", field=name)
            if value.ndim != 2 or value.dtype.kind not in "iu":
                raise LMDataError(
                    f"field {name!r}: expected a 2-D integer array [N, T], got dtype {value.dtype} shape {value.shape}",
                    field=name,
                )
            if shape is None:
                shape = value.shape
            elif value.shape != shape:
                raise LMDataError(
                    f"field {name!r}: expected shape {shape} (as {self._FIELDS[0]!r}), got {value.shape}", field=name
                )
        for ids, attention, completion in self._MASKS:
            attn, comp = getattr(self, attention), getattr(self, completion)
            for name, mask in ((attention, attn), (completion, comp)):
                bad = ~np.isin(mask, (0, 1))
                if bad.any():
                    row = int(np.flatnonzero(bad.any(axis=1))[0])
                    raise _row_error(row, name, f"expected 0/1 values, got {mask[row][bad[row]][0]}")
            # Right padding: the attention mask is a run of ones from position 0.
            lengths = attn.sum(axis=1)
            expected = np.arange(attn.shape[1])[None, :] < lengths[:, None]
            bad_rows = np.flatnonzero((attn.astype(bool) != expected).any(axis=1))
            if bad_rows.size:
                row = int(bad_rows[0])
                raise _row_error(row, attention, f"expected ones then zeros (right padding), got {attn[row].tolist()}")
            outside = np.flatnonzero((comp > attn).any(axis=1))
            if outside.size:
                raise _row_error(int(outside[0]), completion, f"is 1 where {attention!r} is 0 (on padding)")
            empty = np.flatnonzero(comp.sum(axis=1) == 0)
            if empty.size:
                raise _row_error(int(empty[0]), completion, "has no completion token")
        n = len(self)
        if not isinstance(self.extras, Mapping):
            raise LMDataError(f"extras: expected a dict of arrays, got {type(self.extras).__name__}")
        for key, value in self.extras.items():
            if np.ndim(value) == 0 or np.shape(value)[0] != n:
                raise LMDataError(f"extras[{key!r}]: expected a leading dimension of {n} (rows), got shape {np.shape(value)}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class SFTData(_Rows):
    """Prompt-completion rows. Each field ``[N, T]`` int32; see the module docstring for the layout."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    completion_mask: np.ndarray
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    _FIELDS = ("input_ids", "attention_mask", "completion_mask")
    _MASKS = (("input_ids", "attention_mask", "completion_mask"),)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class PreferenceData(_Rows):
    """Preference pairs ``(prompt, chosen, rejected)``. Each field ``[N, T]`` int32, both sides padded to one ``T``."""

    chosen_input_ids: np.ndarray
    chosen_attention_mask: np.ndarray
    chosen_completion_mask: np.ndarray
    rejected_input_ids: np.ndarray
    rejected_attention_mask: np.ndarray
    rejected_completion_mask: np.ndarray
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    _FIELDS = (
        "chosen_input_ids", "chosen_attention_mask", "chosen_completion_mask",
        "rejected_input_ids", "rejected_attention_mask", "rejected_completion_mask",
    )
    _MASKS = (
        ("chosen_input_ids", "chosen_attention_mask", "chosen_completion_mask"),
        ("rejected_input_ids", "rejected_attention_mask", "rejected_completion_mask"),
    )

    def side(self, which: str) -> SFTData:
        """``"chosen"`` or ``"rejected"`` as :class:`SFTData` (same rows, same extras)."""
        if which not in ("chosen", "rejected"):
            raise LMDataError(f"side: expected 'chosen' or 'rejected', got {which!r}")
        return SFTData(
            getattr(self, f"{which}_input_ids"), getattr(self, f"{which}_attention_mask"),
            getattr(self, f"{which}_completion_mask"), dict(self.extras),
        )


# ---------------------------------------------------------------- tokenising


def _rows(value: Any, name: str) -> list:
    if isinstance(value, (str, bytes)):
        raise LMDataError(f"{name}: expected a sequence of rows (strings or token-id lists), got a single {type(value).__name__}")
    if isinstance(value, (np.ndarray, jax.Array)):
        value = np.asarray(value)
        if value.ndim != 2:
            raise LMDataError(f"{name}: an array of token ids must be 2-D [N, L], got shape {value.shape}")
    return list(value)


def _encode(value: Any, tokenizer: Any, row: int, field: str, vocab_size: int | None) -> list[int]:
    """One field of one row -> token ids (no special tokens)."""
    if isinstance(value, str):
        if tokenizer is None:
            raise _row_error(row, field, "got a string but tokenizer is None (pass a tokenizer, or token ids)")
        return [int(t) for t in tokenizer.encode(value)]
    if isinstance(value, (bytes, Mapping)) or value is None:
        raise _row_error(row, field, f"expected a string or a sequence of token ids, got {type(value).__name__}")
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise _row_error(row, field, f"expected a string or a 1-D sequence of token ids, got shape {arr.shape}")
    if arr.size == 0:
        return []
    if arr.dtype.kind not in "iu":
        raise _row_error(row, field, f"expected integer token ids, got dtype {arr.dtype}")
    if arr.min() < 0 or (vocab_size is not None and arr.max() >= vocab_size):
        bad = int(arr[(arr < 0) | (arr >= (vocab_size if vocab_size is not None else np.inf))][0])
        limit = f"0..{vocab_size - 1}" if vocab_size is not None else ">= 0"
        raise _row_error(row, field, f"token id {bad} is outside the vocabulary ({limit})")
    return arr.astype(np.int64).tolist()


def _special_ids(tokenizer, pad_id, bos_id, eos_id, add_bos, add_eos) -> tuple[int, int | None, int | None]:
    """(pad, bos or None, eos or None) from the arguments, else the tokenizer."""
    def pick(given, role):
        return given if given is not None else getattr(tokenizer, f"{role}_id", None)

    pad, bos, eos = pick(pad_id, "pad"), pick(bos_id, "bos"), pick(eos_id, "eos")
    if add_eos and eos is None:
        raise LMDataError("eos_id: add_eos=True but no eos id (give eos_id=..., or a tokenizer with an eos token)")
    if add_bos and bos is None:
        raise LMDataError("bos_id: add_bos=True but no bos id (give bos_id=..., a tokenizer with one, or add_bos=None/False)")
    if pad is None:
        # Padding is masked out everywhere, so its value only has to be a valid id;
        # tokenizers without a pad token (Llama 3, GPT-2) pad with eos, as TRL does.
        pad = eos
    if pad is None:
        raise LMDataError("pad_id: no pad id (give pad_id=..., or a tokenizer with a pad or eos token)")
    vocab = getattr(tokenizer, "vocab_size", None)
    for role, value in (("pad_id", pad), ("bos_id", bos), ("eos_id", eos)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0 or (vocab is not None and value >= vocab):
            expected = "a non-negative int" if vocab is None else f"an int in 0..{vocab - 1}"
            raise LMDataError(f"{role}: expected {expected}, got {value!r}")
    use_bos = bos if (add_bos or (add_bos is None and bos is not None)) else None
    return int(pad), None if use_bos is None else int(use_bos), int(eos) if add_eos else None


def _pack(rows, max_length, pad, bos, eos, fields) -> dict[str, np.ndarray]:
    """``rows``: list of ``(prompt_ids, [completion_ids, ...])``; one ``[N, T]`` triple per completion field."""
    prompt_field, completion_fields = fields
    needed = []
    for i, (prompt, completions) in enumerate(rows):
        head = len(prompt) + (bos is not None)
        if head == 0:
            raise _row_error(
                i, prompt_field,
                "empty prompt and no bos token: the first completion token would have no token before it "
                "to be predicted from (add a prompt, or add_bos=True with a bos id)",
            )
        for field, completion in zip(completion_fields, completions):
            if len(completion) == 0:
                raise _row_error(i, field, "empty completion (expected at least 1 token)")
            needed.append(head + len(completion) + (eos is not None))
    if max_length is None:
        max_length = max(needed)
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 2:
        raise LMDataError(f"max_length: expected an int >= 2, got {max_length!r}")
    T = int(max_length)
    out = {}
    for k, field in enumerate(completion_fields):
        ids = np.full((len(rows), T), pad, np.int32)
        attention = np.zeros((len(rows), T), np.int32)
        completion_mask = np.zeros((len(rows), T), np.int32)
        for i, (prompt, completions) in enumerate(rows):
            head = ([bos] if bos is not None else []) + prompt
            tail = completions[k] + ([eos] if eos is not None else [])
            with_bos = " (with bos)" if bos is not None else ""
            if len(head) >= T:
                raise _row_error(
                    i, prompt_field,
                    f"the prompt is {len(prompt)} tokens{f' + bos = {len(head)}' if bos is not None else ''}, "
                    f"max_length is {T}: no room for a completion "
                    "(nothing is truncated: raise max_length or drop the row)",
                )
            total = len(head) + len(tail)
            if total > T:
                raise _row_error(
                    i, field,
                    f"prompt {len(head)}{with_bos} + {field} {len(completions[k])}"
                    f"{' + eos 1' if eos is not None else ''} = {total} tokens, max_length is {T} "
                    "(nothing is truncated: raise max_length or drop the row)",
                )
            ids[i, :total] = head + tail
            attention[i, :total] = 1
            completion_mask[i, len(head):total] = 1
        out[field] = (ids, attention, completion_mask)
    return out


def _extras(extras: Mapping[str, Any] | None, n: int) -> dict[str, np.ndarray]:
    out = {}
    for key, value in (extras or {}).items():
        arr = np.asarray(value)
        if arr.ndim == 0 or arr.shape[0] != n:
            raise LMDataError(f"extras[{key!r}]: expected a leading dimension of {n} (one per row), got shape {arr.shape}")
        out[key] = arr
    return out


def tokenize_sft(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    tokenizer: Any = None,
    max_length: int | None = None,
    *,
    add_bos: bool | None = None,
    add_eos: bool = True,
    pad_id: int | None = None,
    bos_id: int | None = None,
    eos_id: int | None = None,
    extras: Mapping[str, Any] | None = None,
) -> SFTData:
    """Prompt-completion rows -> :class:`SFTData` with arrays ``[N, max_length]``.

    Args:
      prompts, completions: ``N`` strings (tokenised with ``tokenizer``, no
        special tokens added) or ``N`` token-id sequences (may be a 2-D array).
        An empty prompt is allowed when a bos token is added.
      tokenizer: ``ByteTokenizer``, ``HFTokenizer`` or ``None`` (token ids only;
        then give ``pad_id`` and ``eos_id``).
      max_length: ``T``. ``None``: the longest row. A row that does not fit
        raises :class:`LMDataError` naming the row, the field and the lengths.
      add_bos: ``None`` adds a bos token when a bos id is known, ``True``
        requires one, ``False`` never adds it.
      add_eos: append eos to every completion (it is part of the completion mask).
      pad_id, bos_id, eos_id: override the tokenizer's ids. Without a pad id the
        eos id pads (padding is masked, so any valid id does).
      extras: ``{name: [N, ...]}`` per-row values carried along.
    """
    prompt_rows, completion_rows = _rows(prompts, "prompts"), _rows(completions, "completions")
    if len(prompt_rows) != len(completion_rows):
        raise LMDataError(f"prompts has {len(prompt_rows)} rows, completions has {len(completion_rows)}: expected equal")
    if not prompt_rows:
        raise LMDataError("prompts: expected at least one row, got none")
    pad, bos, eos = _special_ids(tokenizer, pad_id, bos_id, eos_id, add_bos, add_eos)
    vocab = getattr(tokenizer, "vocab_size", None)
    rows = [
        (_encode(p, tokenizer, i, "prompt", vocab), [_encode(c, tokenizer, i, "completion", vocab)])
        for i, (p, c) in enumerate(zip(prompt_rows, completion_rows))
    ]
    packed = _pack(rows, max_length, pad, bos, eos, ("prompt", ("completion",)))
    data = SFTData(*packed["completion"], extras=_extras(extras, len(rows)))
    data.validate()
    return data


def tokenize_preferences(
    prompts: Sequence[Any],
    chosen: Sequence[Any],
    rejected: Sequence[Any],
    tokenizer: Any = None,
    max_length: int | None = None,
    *,
    add_bos: bool | None = None,
    add_eos: bool = True,
    pad_id: int | None = None,
    bos_id: int | None = None,
    eos_id: int | None = None,
    extras: Mapping[str, Any] | None = None,
) -> PreferenceData:
    """Preference pairs -> :class:`PreferenceData` with arrays ``[N, max_length]``.

    Same arguments as :func:`tokenize_sft`, with ``chosen`` and ``rejected``
    completions for each prompt. Both sides are padded to the same ``T``
    (``None``: the longest of either side); errors name the row and the field
    (``"prompt"``, ``"chosen"`` or ``"rejected"``).
    """
    prompt_rows = _rows(prompts, "prompts")
    chosen_rows, rejected_rows = _rows(chosen, "chosen"), _rows(rejected, "rejected")
    if not len(prompt_rows) == len(chosen_rows) == len(rejected_rows):
        raise LMDataError(
            f"prompts has {len(prompt_rows)} rows, chosen {len(chosen_rows)}, rejected {len(rejected_rows)}: expected equal"
        )
    if not prompt_rows:
        raise LMDataError("prompts: expected at least one row, got none")
    pad, bos, eos = _special_ids(tokenizer, pad_id, bos_id, eos_id, add_bos, add_eos)
    vocab = getattr(tokenizer, "vocab_size", None)
    rows = [
        (
            _encode(p, tokenizer, i, "prompt", vocab),
            [_encode(c, tokenizer, i, "chosen", vocab), _encode(r, tokenizer, i, "rejected", vocab)],
        )
        for i, (p, c, r) in enumerate(zip(prompt_rows, chosen_rows, rejected_rows))
    ]
    packed = _pack(rows, max_length, pad, bos, eos, ("prompt", ("chosen", "rejected")))
    data = PreferenceData(*packed["chosen"], *packed["rejected"], extras=_extras(extras, len(rows)))
    data.validate()
    return data


# ---------------------------------------------------------------- JSONL files


def _read_jsonl(path: str, text_keys: Sequence[str], extra_keys: Sequence[str]):
    """Columns ``{key: [values]}`` and the 1-based line number of each record."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r}: no such JSONL file")
    columns: dict[str, list] = {k: [] for k in (*text_keys, *extra_keys)}
    lines: list[int] = []
    expected = ", ".join(repr(k) for k in (*text_keys, *extra_keys))
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise LMDataError(f"{path}, line {number}: not valid UTF-8 ({e})") from None
            if not text.strip():
                continue  # blank lines are allowed
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                raise LMDataError(f"{path}, line {number}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise LMDataError(f"{path}, line {number}: expected a JSON object with keys {expected}, got {type(record).__name__}")
            for key in (*text_keys, *extra_keys):
                if key not in record:
                    raise LMDataError(
                        f"{path}, line {number}: missing key {key!r} (expected keys {expected}, got {sorted(record)})",
                        field=key,
                    )
                value = record[key]
                if key in text_keys and not isinstance(value, str):
                    raise LMDataError(
                        f"{path}, line {number}, key {key!r}: expected a string, got {type(value).__name__} {value!r:.60}",
                        field=key,
                    )
                if key in extra_keys and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise LMDataError(
                        f"{path}, line {number}, key {key!r}: expected a number, got {type(value).__name__} {value!r:.60}",
                        field=key,
                    )
                columns[key].append(value)
            lines.append(number)
    if not lines:
        raise LMDataError(f"{path}: no records (the file is empty or has only blank lines)")
    return columns, lines


def _in_file(error: LMDataError, path: str, lines: list[int]) -> LMDataError:
    if error.row is None:
        return LMDataError(f"{path}: {error}")
    return LMDataError(
        f"{path}, line {lines[error.row]}, key {error.field!r}: {error.detail}", row=error.row, field=error.field,
        detail=error.detail,
    )


def _tokenizer(tokenizer: Any):
    from rljax.lm.tokenizers import load_tokenizer

    if tokenizer is None:
        raise LMDataError("tokenizer: a JSONL file holds text, so a tokenizer (or 'byte', or a tokenizer.json path) is needed")
    return load_tokenizer(tokenizer)


def load_sft_jsonl(path: str, tokenizer: Any, max_length: int | None, *, extra_keys: Sequence[str] = (), **kwargs: Any) -> SFTData:
    """A JSONL file of ``{"prompt": str, "completion": str}`` objects -> :class:`SFTData`.

    Blank lines are skipped. ``tokenizer`` is a tokenizer or a spec for
    ``load_tokenizer`` (``"byte"``, a path). ``extra_keys`` names numeric keys
    carried into ``extras``. ``kwargs`` go to :func:`tokenize_sft`. A bad line
    (not JSON, not an object, a missing key, a non-string text, a row that does
    not fit) raises :class:`LMDataError` naming the file, the 1-based line and the key.
    """
    columns, lines = _read_jsonl(path, ("prompt", "completion"), tuple(extra_keys))
    extras = {k: np.asarray(columns[k]) for k in extra_keys}
    try:
        return tokenize_sft(
            columns["prompt"], columns["completion"], _tokenizer(tokenizer), max_length, extras=extras, **kwargs
        )
    except LMDataError as e:
        raise _in_file(e, os.fspath(path), lines) from None


def load_preference_jsonl(
    path: str, tokenizer: Any, max_length: int | None, *, extra_keys: Sequence[str] = (), **kwargs: Any
) -> PreferenceData:
    """A JSONL file of ``{"prompt": str, "chosen": str, "rejected": str}`` objects -> :class:`PreferenceData`.

    As :func:`load_sft_jsonl`; ``extra_keys=("gold_margin",)`` carries a numeric
    per-pair value into ``extras``. ``kwargs`` go to :func:`tokenize_preferences`.
    """
    columns, lines = _read_jsonl(path, ("prompt", "chosen", "rejected"), tuple(extra_keys))
    extras = {k: np.asarray(columns[k]) for k in extra_keys}
    try:
        return tokenize_preferences(
            columns["prompt"], columns["chosen"], columns["rejected"], _tokenizer(tokenizer), max_length,
            extras=extras, **kwargs,
        )
    except LMDataError as e:
        raise _in_file(e, os.fspath(path), lines) from None


__all__ = [
    "LMDataError", "PreferenceData", "SFTData", "load_preference_jsonl", "load_sft_jsonl",
    "tokenize_preferences", "tokenize_sft",
]
