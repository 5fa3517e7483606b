"""Tokenizers with one small interface: a byte-level one and any Hugging Face ``tokenizer.json``.

Both classes have

    encode(text, add_bos=False, add_eos=False) -> list[int]
    decode(ids, skip_special=True) -> str
    pad_id, bos_id, eos_id     int, or None where the tokenizer has no such token
    vocab_size                 int: every id the tokenizer can emit is < vocab_size

``load_tokenizer("byte")`` gives :class:`ByteTokenizer`; ``load_tokenizer(path)``
with a ``tokenizer.json`` file, or a directory holding one (a Hugging Face model
directory), gives :class:`HFTokenizer`. ``check_vocab(tokenizer, model_vocab)``
raises :class:`TokenizerMismatchError` when the tokenizer can emit ids that the
model has no embedding row for.

The ``tokenizers`` library is imported only when an :class:`HFTokenizer` is built.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable


class TokenizerMismatchError(ValueError):
    """A tokenizer does not fit a model (it can emit ids outside the model's vocabulary)."""


# ---------------------------------------------------------------- byte level


class ByteTokenizer:
    """UTF-8 bytes as tokens: ids 0..255 are the bytes, then pad=256, bos=257, eos=258.

    ``vocab_size`` is 259. ``encode`` never adds special tokens unless asked;
    ``decode`` drops them (``skip_special=True``) or writes them as ``<pad>``,
    ``<bos>``, ``<eos>``; byte runs that are not valid UTF-8 decode to U+FFFD.
    """

    pad_id = 256
    bos_id = 257
    eos_id = 258
    vocab_size = 259
    _SPECIAL_TEXT = {256: "<pad>", 257: "<bos>", 258: "<eos>"}

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """``text`` -> ``[bos?] utf8_bytes [eos?]`` as a list of ints."""
        if not isinstance(text, str):
            raise TypeError(f"ByteTokenizer.encode: expected a str, got {type(text).__name__}")
        ids = list(text.encode("utf-8"))
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Ids -> text; raises ``ValueError`` naming the position of an id outside ``0..258``."""
        pieces: list[str] = []
        run = bytearray()
        for position, token in enumerate(ids):
            token = int(token)
            if 0 <= token < 256:
                run.append(token)
                continue
            if token not in self._SPECIAL_TEXT:
                raise ValueError(
                    f"ByteTokenizer.decode: id {token} at position {position} is outside 0..{self.vocab_size - 1}"
                )
            pieces.append(run.decode("utf-8", errors="replace"))
            run = bytearray()
            if not skip_special:
                pieces.append(self._SPECIAL_TEXT[token])
        pieces.append(run.decode("utf-8", errors="replace"))
        return "".join(pieces)

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=259, pad_id=256, bos_id=257, eos_id=258)"


# ---------------------------------------------------------------- Hugging Face tokenizer.json

# Looked up in this order when no name is given (and the model directory's
# special_tokens_map.json / tokenizer_config.json does not name one).
# GPT-2-style tokenizers have only <|endoftext|>, which serves as bos and eos.
PAD_CANDIDATES = ("<pad>", "[PAD]", "<|pad|>", "<|padding|>", "<|finetune_right_pad_id|>")
BOS_CANDIDATES = ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>", "<|endoftext|>")
EOS_CANDIDATES = ("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|eos|>")


def _config_special_tokens(directory: str) -> dict[str, str]:
    """``{"pad": name, "bos": ..., "eos": ...}`` from a model directory's token maps, where present."""
    found: dict[str, str] = {}
    for filename in ("tokenizer_config.json", "special_tokens_map.json"):  # the second wins
        path = os.path.join(directory, filename)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue  # an unreadable side file: fall back to the common names
        if not isinstance(config, dict):
            continue
        for role in ("pad", "bos", "eos"):
            value = config.get(f"{role}_token")
            if isinstance(value, dict):  # {"content": "<s>", "lstrip": false, ...}
                value = value.get("content")
            if isinstance(value, str):
                found[role] = value
    return found


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` (any model: BPE, WordPiece, Unigram, WordLevel) behind the common interface.

    Args:
      source: path to a ``tokenizer.json`` file, or a ``tokenizers.Tokenizer``.
      pad_token, bos_token, eos_token: names of the special tokens. A name given
        here must be in the vocabulary. ``None`` looks the role up in the model
        directory's ``special_tokens_map.json``/``tokenizer_config.json`` (when
        ``config_dir`` is given), then among the common names
        (``PAD_CANDIDATES``, ``BOS_CANDIDATES``, ``EOS_CANDIDATES``); the id is
        ``None`` when none is found.
      config_dir: a directory whose token maps name the special tokens
        (``load_tokenizer`` passes the model directory).

    ``encode`` does not add the tokenizer's own post-processor specials
    (``add_special_tokens=False``): bos and eos are added only through
    ``add_bos``/``add_eos``, so every tokenizer lays sequences out the same way.
    """

    def __init__(
        self,
        source: Any,
        pad_token: str | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        config_dir: str | None = None,
    ):
        try:
            import tokenizers
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "HFTokenizer needs the `tokenizers` package (pip install tokenizers)"
            ) from e
        if isinstance(source, (str, os.PathLike)):
            self.path: str | None = os.fspath(source)
            self._tok = tokenizers.Tokenizer.from_file(self.path)
        elif isinstance(source, tokenizers.Tokenizer):
            self.path = None
            self._tok = source
        else:
            raise TypeError(
                f"HFTokenizer: expected a path to tokenizer.json or a tokenizers.Tokenizer, got {type(source).__name__}"
            )
        self.vocab_size: int = int(self._tok.get_vocab_size(with_added_tokens=True))
        from_config = _config_special_tokens(config_dir) if config_dir else {}
        given = {"pad": pad_token, "bos": bos_token, "eos": eos_token}
        candidates = {"pad": PAD_CANDIDATES, "bos": BOS_CANDIDATES, "eos": EOS_CANDIDATES}
        self.special_tokens: dict[str, str | None] = {}
        ids: dict[str, int | None] = {}
        for role in ("pad", "bos", "eos"):
            name = given[role]
            if name is not None:
                token_id = self._tok.token_to_id(name)
                if token_id is None:
                    raise ValueError(
                        f"HFTokenizer: {role}_token {name!r} is not in the vocabulary of "
                        f"{self.path or 'the tokenizer'} ({self.vocab_size} tokens)"
                    )
            else:
                names = ([from_config[role]] if role in from_config else []) + list(candidates[role])
                name, token_id = next(
                    ((n, self._tok.token_to_id(n)) for n in names if self._tok.token_to_id(n) is not None),
                    (None, None),
                )
            self.special_tokens[role] = name
            ids[role] = None if token_id is None else int(token_id)
        self.pad_id: int | None = ids["pad"]
        self.bos_id: int | None = ids["bos"]
        self.eos_id: int | None = ids["eos"]

    @property
    def backend(self):
        """The wrapped ``tokenizers.Tokenizer``."""
        return self._tok

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """``text`` -> ``[bos?] ids [eos?]``; asking for a bos/eos the tokenizer lacks raises ``ValueError``."""
        if not isinstance(text, str):
            raise TypeError(f"HFTokenizer.encode: expected a str, got {type(text).__name__}")
        for wanted, role, token_id in ((add_bos, "bos", self.bos_id), (add_eos, "eos", self.eos_id)):
            if wanted and token_id is None:
                raise ValueError(
                    f"HFTokenizer.encode: add_{role}=True but the tokenizer has no {role} token; "
                    f"pass {role}_token=... when building it"
                )
        ids = list(self._tok.encode(text, add_special_tokens=False).ids)
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Ids -> text (``skip_special`` drops special and added special tokens)."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def __repr__(self) -> str:
        return (
            f"HFTokenizer({self.path or '<in memory>'}, vocab_size={self.vocab_size}, "
            f"pad_id={self.pad_id}, bos_id={self.bos_id}, eos_id={self.eos_id})"
        )


# ---------------------------------------------------------------- loading and checking


def load_tokenizer(spec: Any, **kwargs: Any):
    """``"byte"`` -> :class:`ByteTokenizer`; a ``tokenizer.json`` path or a directory with one -> :class:`HFTokenizer`.

    A tokenizer object (anything with ``encode``, ``decode`` and ``vocab_size``)
    is returned as it is. ``kwargs`` (``pad_token``, ``bos_token``,
    ``eos_token``) go to :class:`HFTokenizer`. Anything else raises
    ``FileNotFoundError`` naming the path.
    """
    if not isinstance(spec, (str, os.PathLike)):
        if all(hasattr(spec, a) for a in ("encode", "decode", "vocab_size")):
            return spec
        raise TypeError(
            f"load_tokenizer: expected 'byte', a path, or a tokenizer object, got {type(spec).__name__}"
        )
    path = os.fspath(spec)
    if path == "byte":
        if kwargs:
            raise TypeError(f"load_tokenizer('byte'): the byte tokenizer takes no options, got {sorted(kwargs)}")
        return ByteTokenizer()
    if os.path.isdir(path):
        file = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"load_tokenizer: directory {path!r} has no tokenizer.json "
                f"(expected 'byte', a tokenizer.json file, or a directory containing one)"
            )
        return HFTokenizer(file, config_dir=path, **kwargs)
    if os.path.isfile(path):
        return HFTokenizer(path, config_dir=os.path.dirname(path) or ".", **kwargs)
    raise FileNotFoundError(
        f"load_tokenizer: {path!r} is neither 'byte' nor an existing tokenizer.json file or directory"
    )


def check_vocab(tokenizer: Any, model_vocab_size: int) -> None:
    """Raise :class:`TokenizerMismatchError` if ``tokenizer`` can emit ids the model has no row for.

    A model vocabulary larger than the tokenizer's (an embedding padded to a
    multiple of 64, say) is fine; a smaller one is not.
    """
    tokenizer_vocab = int(tokenizer.vocab_size)
    if tokenizer_vocab > int(model_vocab_size):
        raise TokenizerMismatchError(
            f"tokenizer/model vocab mismatch: the tokenizer ({type(tokenizer).__name__}) has vocab_size "
            f"{tokenizer_vocab}, the model has vocab_size {int(model_vocab_size)}; ids "
            f"{int(model_vocab_size)}..{tokenizer_vocab - 1} would have no embedding row "
            "(expected model vocab_size >= tokenizer vocab_size)"
        )


__all__ = [
    "BOS_CANDIDATES", "ByteTokenizer", "EOS_CANDIDATES", "HFTokenizer", "PAD_CANDIDATES",
    "TokenizerMismatchError", "check_vocab", "load_tokenizer",
]

