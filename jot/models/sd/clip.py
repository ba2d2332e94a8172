"""The CLIP text encoder of Stable Diffusion (transformers ``CLIPTextModel``) and its tokenizer.

:class:`CLIPTextModel` maps token ids [N, L] to ``last_hidden_state`` [N, L, D]:
token + position embeddings, pre-LayerNorm transformer layers with a causal
mask, ``quick_gelu`` (SD 1.x) or exact ``gelu`` (SD 2.x) MLPs, final LayerNorm.

:class:`CLIPTokenizer` wraps the ``tokenizers`` library (byte-level BPE with
``</w>`` word ends, as transformers builds it) and pads/truncates every prompt
to ``model_max_length`` (77) tokens ``<|startoftext|> ... <|endoftext|> pad...``.

Textual inversion (placeholder tokens such as ``"<cat>"`` with learned embeddings):
:meth:`CLIPTokenizer.add_tokens` gives the placeholders the ids ``V, V+1, ...`` after the
vocabulary, and ``CLIPTextModel(ids, extra_embeddings=E)`` reads those ids from the rows of
``E`` [K, D] while every other id reads the frozen token table, so only ``E`` needs to be
trained (see :mod:`jot.models.sd.textual_inversion` for the file format and
:func:`initial_embeddings` for a starting point).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from flax import nnx
from jax.typing import DTypeLike
from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from jot.models.sd.layers import linear, multi_head_attention

_UNSET_LENGTH = 10**6
_ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
}


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """The architecture of a CLIP text encoder; build with :meth:`from_transformers`."""

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_transformers(cls, config: Mapping[str, Any]) -> CLIPTextConfig:
        """Parse a transformers ``CLIPTextConfig`` ``config.json`` dict."""
        if "text_config" in config:
            raise ValueError(
                "text encoder config is a full CLIPConfig (has 'text_config'); Stable Diffusion's text_encoder/ "
                "holds a CLIPTextModel config. Save model.text_model with CLIPTextModel.save_pretrained."
            )
        defaults = cls()
        values = {f.name: config.get(f.name, getattr(defaults, f.name)) for f in dataclasses.fields(cls)}
        if values["hidden_act"] not in _ACTIVATIONS:
            raise ValueError(
                f"text encoder hidden_act={values['hidden_act']!r} is not supported; "
                f"expected one of {list(_ACTIVATIONS)}."
            )
        if values["hidden_size"] % values["num_attention_heads"]:
            raise ValueError(
                f"text encoder hidden_size={values['hidden_size']} is not divisible by "
                f"num_attention_heads={values['num_attention_heads']}."
            )
        return cls(**values)


class CLIPAttention(nnx.Module):
    """Multi-head self-attention with biased ``q_proj``/``k_proj``/``v_proj``/``out_proj``."""

    def __init__(self, dim: int, heads: int, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.heads = heads
        self.q_proj = linear(dim, dim, **kw)
        self.k_proj = linear(dim, dim, **kw)
        self.v_proj = linear(dim, dim, **kw)
        self.out_proj = linear(dim, dim, **kw)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        out = multi_head_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), heads=self.heads, mask=mask)
        return self.out_proj(out)


class CLIPMLP(nnx.Module):
    """``fc1 -> activation -> fc2``."""

    def __init__(self, cfg: CLIPTextConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.hidden_act = cfg.hidden_act
        self.fc1 = linear(cfg.hidden_size, cfg.intermediate_size, **kw)
        self.fc2 = linear(cfg.intermediate_size, cfg.hidden_size, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(_ACTIVATIONS[self.hidden_act](self.fc1(x)))


class CLIPEncoderLayer(nnx.Module):
    """Pre-LN residual block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, cfg: CLIPTextConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ln = dict(epsilon=cfg.layer_norm_eps, use_fast_variance=False, **kw)
        self.layer_norm1 = nnx.LayerNorm(cfg.hidden_size, **ln)
        self.self_attn = CLIPAttention(cfg.hidden_size, cfg.num_attention_heads, **kw)
        self.layer_norm2 = nnx.LayerNorm(cfg.hidden_size, **ln)
        self.mlp = CLIPMLP(cfg, **kw)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nnx.Module):
    """``token_embedding`` plus learned ``position_embedding``."""

    def __init__(self, cfg: CLIPTextConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.token_embedding = nnx.Embed(cfg.vocab_size, cfg.hidden_size, **kw)
        self.position_embedding = nnx.Embed(cfg.max_position_embeddings, cfg.hidden_size, **kw)

    def __call__(self, input_ids: jax.Array, extra_embeddings: jax.Array | None = None) -> jax.Array:
        positions = jnp.arange(input_ids.shape[1])
        return self.embed_tokens(input_ids, extra_embeddings) + self.position_embedding(positions)[None]

    def embed_tokens(self, input_ids: jax.Array, extra_embeddings: jax.Array | None = None) -> jax.Array:
        """Token embeddings [..., D]: ids below the table size V read ``token_embedding``; ids
        ``V .. V+K-1`` read the rows of ``extra_embeddings`` [K, D]. Any other id gives NaN rows."""
        if extra_embeddings is None:
            return self.token_embedding(input_ids)  # out-of-range ids read NaN (jnp.take's "fill" mode)
        table = self.token_embedding
        size = table.num_embeddings
        extra = jnp.asarray(extra_embeddings, table.dtype or table.embedding.dtype)
        is_extra = input_ids >= size
        base = table(jnp.where(is_extra, 0, input_ids))
        rows = jnp.take(extra, jnp.where(is_extra, input_ids - size, 0), axis=0, mode="fill", fill_value=jnp.nan)
        return jnp.where(is_extra[..., None], rows, base)


class CLIPEncoder(nnx.Module):
    """The stack of :class:`CLIPEncoderLayer` (``encoder.layers``)."""

    def __init__(self, cfg: CLIPTextConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs) -> None:
        self.layers = nnx.List(
            CLIPEncoderLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs) for _ in range(cfg.num_hidden_layers)
        )

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class CLIPTextModel(nnx.Module):
    """transformers ``CLIPTextModel`` (its ``text_model``), returning ``last_hidden_state``.

    Args:
      config: a :class:`CLIPTextConfig` or a transformers ``config.json`` dict.
      dtype, param_dtype: compute and parameter dtypes.
    """

    def __init__(
        self,
        config: CLIPTextConfig | Mapping[str, Any],
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        cfg = config if isinstance(config, CLIPTextConfig) else CLIPTextConfig.from_transformers(config)
        self.config = cfg
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embeddings = CLIPEmbeddings(cfg, **kw)
        self.encoder = CLIPEncoder(cfg, **kw)
        self.final_layer_norm = nnx.LayerNorm(
            cfg.hidden_size, epsilon=cfg.layer_norm_eps, use_fast_variance=False, **kw
        )

    @property
    def num_embeddings(self) -> int:
        """V, the number of rows of the (frozen) token table; ids from V on need ``extra_embeddings``."""
        return self.embeddings.token_embedding.num_embeddings

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        *,
        extra_embeddings: jax.Array | None = None,
    ) -> jax.Array:
        """``input_ids`` [N, L] (L <= max_position_embeddings) -> ``last_hidden_state`` [N, L, hidden_size].

        ``attention_mask`` [N, L] (1 = real token, 0 = padding) additionally hides
        padding keys; Stable Diffusion pipelines pass none.

        ``extra_embeddings`` [K, hidden_size] holds the embeddings of the ids ``V .. V+K-1``
        (V = :attr:`num_embeddings`), e.g. textual-inversion placeholder tokens added with
        :meth:`CLIPTokenizer.add_tokens`; ids below V read the token table. The table is only
        read, so differentiating with respect to ``extra_embeddings`` alone trains just those
        K rows and leaves the table bit-identical. Ids outside ``[0, V+K)`` (``[0, V)``
        without ``extra_embeddings``) raise ValueError when ``input_ids`` is concrete; under
        ``jax.jit`` they cannot be checked and give NaN outputs instead of another row.
        """
        cfg = self.config
        size = self.num_embeddings
        if np.ndim(input_ids) != 2 or np.shape(input_ids)[1] > cfg.max_position_embeddings:
            raise ValueError(
                f"input_ids must be [N, L] with L <= max_position_embeddings={cfg.max_position_embeddings}, "
                f"got shape {tuple(np.shape(input_ids))}; tokenize with CLIPTokenizer (pads/truncates to 77)."
            )
        limit = size
        if extra_embeddings is not None:
            shape = tuple(np.shape(extra_embeddings))
            if len(shape) != 2 or shape[1] != cfg.hidden_size or shape[0] == 0:
                raise ValueError(
                    f"extra_embeddings must be [K, hidden_size={cfg.hidden_size}] with K >= 1 (one row per added "
                    f"token, ids {size}..{size}+K-1), got shape {shape}; stack the rows of the added tokens in id "
                    "order (textual_inversion.extend does)."
                )
            limit = size + shape[0]
        if not isinstance(input_ids, jax.core.Tracer):
            _check_ids(np.asarray(input_ids), size, limit, cfg.hidden_size)
        input_ids = jnp.asarray(input_ids)
        length = input_ids.shape[1]
        mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
        if attention_mask is not None:
            mask = mask & jnp.asarray(attention_mask, bool)[:, None, None, :]
        x = self.embeddings(input_ids, extra_embeddings)
        x = self.encoder(x, mask)
        return self.final_layer_norm(x)


def _check_ids(input_ids: np.ndarray, size: int, limit: int, hidden_size: int) -> None:
    """Raises ValueError naming the ids outside ``[0, limit)`` (a table of ``size`` rows + extra rows)."""
    if not input_ids.size or (input_ids.min() >= 0 and input_ids.max() < limit):
        return
    bad = sorted({int(i) for i in input_ids.ravel() if i < 0 or i >= limit})
    if limit == size:
        what = f"the token table of {size} rows"
        fix = f"pass extra_embeddings [K, {hidden_size}] holding the rows of the added token ids {size}..{size}+K-1"
    else:
        what = f"the token table of {size} rows + {limit - size} extra_embeddings rows"
        fix = "pass one extra_embeddings row per token added to the tokenizer, in id order"
    raise ValueError(f"input_ids {bad[:10]} are outside [0, {limit}) ({what}); {fix}.")


def _special_token(config: Mapping[str, Any], key: str, default: str) -> str:
    value = config.get(key, default)
    if isinstance(value, Mapping):  # AddedToken serialised as {"content": ...}
        value = value["content"]
    return default if value is None else str(value)


class CLIPTokenizer:
    """CLIP's byte-level BPE tokenizer, padding/truncating to a fixed length.

    Build with :meth:`from_dir` on a diffusers ``tokenizer/`` folder holding either
    ``tokenizer.json`` or ``vocab.json`` + ``merges.txt`` (with optional
    ``tokenizer_config.json`` / ``special_tokens_map.json`` for ``model_max_length``
    and the special tokens). Calling it returns int32 ids [N, model_max_length].
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer, *, model_max_length: int, pad_token: str) -> None:
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"pad token {pad_token!r} is not in the tokenizer vocabulary.")
        tokenizer.enable_truncation(max_length=model_max_length)
        tokenizer.enable_padding(length=model_max_length, pad_id=pad_id, pad_token=pad_token)
        self.tokenizer = tokenizer
        self.model_max_length = model_max_length
        self.pad_token_id = pad_id
        self.added_tokens: list[str] = []  # placeholder tokens from add_tokens, in id order

    @property
    def vocab_size(self) -> int:
        """The number of token ids, placeholder tokens from :meth:`add_tokens` included."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def add_tokens(self, tokens: Sequence[str]) -> list[int]:
        """Adds placeholder tokens (e.g. ``["<cat>"]``) and returns their ids.

        The ids are ``vocab_size, vocab_size + 1, ...`` in the order given. Each token is
        matched as a whole in the (lowercased) prompt and never split by BPE, as after
        transformers' ``CLIPTokenizer.add_tokens``: ``"a photo of <cat>"`` ends in the id of
        ``"<cat>"``. Raises ValueError for a token that is already a token (of the vocabulary
        or added before), repeated, or empty; nothing is added then.
        """
        if isinstance(tokens, str):
            tokens = [tokens]
        tokens = list(tokens)
        seen: set[str] = set()
        for token in tokens:
            if not isinstance(token, str) or not token.strip():
                raise ValueError(
                    f"placeholder token {token!r} must be a non-empty string such as '<cat>'; pick another name."
                )
            if token in seen or self.tokenizer.token_to_id(token) is not None:
                where = "is repeated in the tokens to add" if token in seen else "is already a token of the tokenizer"
                raise ValueError(
                    f"placeholder token {token!r} {where} (id {self.tokenizer.token_to_id(token)}); a placeholder must "
                    f"be new so that it gets its own embedding row. Pick another name, e.g. '<{token.strip('<>')}-1>'."
                )
            seen.add(token)
        first = self.vocab_size
        added = self.tokenizer.add_tokens(
            [tokenizers.AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=True) for t in tokens]
        )
        ids = [self.tokenizer.token_to_id(t) for t in tokens]
        if added != len(tokens) or ids != list(range(first, first + len(tokens))):
            raise ValueError(
                f"adding {tokens} gave ids {ids}, expected {list(range(first, first + len(tokens)))}; the tokenizer's "
                "vocabulary ids are not contiguous, so placeholder ids cannot follow it."
            )
        self.added_tokens.extend(tokens)
        return ids

    def token_ids(self, text: str) -> list[int]:
        """The ids of ``text`` alone: no start/end token, no padding (truncated to ``model_max_length``)."""
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        return [i for i, m in zip(encoding.ids, encoding.attention_mask) if m]

    @classmethod
    def from_dir(cls, path: str | Path, *, model_max_length: int | None = None) -> CLIPTokenizer:
        """Read a tokenizer folder as saved by transformers' ``CLIPTokenizer.save_pretrained``.

        ``model_max_length`` overrides the value in ``tokenizer_config.json`` (default 77).
        """
        path = Path(path)
        config: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if (path / name).is_file():
                config.update(json.loads((path / name).read_text()))
        bos = _special_token(config, "bos_token", "<|startoftext|>")
        eos = _special_token(config, "eos_token", "<|endoftext|>")
        unk = _special_token(config, "unk_token", "<|endoftext|>")
        pad = _special_token(config, "pad_token", "<|endoftext|>")
        if (path / "tokenizer.json").is_file():
            tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            tok = _bpe_from_files(path / "vocab.json", path / "merges.txt", bos=bos, eos=eos, unk=unk)
        else:
            raise FileNotFoundError(
                f"tokenizer folder {path} holds neither tokenizer.json nor vocab.json + merges.txt; "
                "save a CLIP tokenizer there with transformers' CLIPTokenizer.save_pretrained."
            )
        tok.add_special_tokens([bos, eos, unk, pad])
        if model_max_length is None:
            # transformers writes a ~1e30 sentinel when no length was set; CLIP's is 77.
            value = config.get("model_max_length")
            model_max_length = 77 if value is None or value > _UNSET_LENGTH else int(value)
        return cls(tok, model_max_length=model_max_length, pad_token=pad)

    @classmethod
    def byte_level(cls, *, model_max_length: int = 77) -> CLIPTokenizer:
        """CLIP's tokenizer with no merges: the 256 byte symbols, their word-final forms and the
        start/end tokens (514 ids), so every byte of a word is one token. For small models
        trained from scratch, which need no vocabulary files."""
        symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
        bos, eos = "<|startoftext|>", "<|endoftext|>"
        names = symbols + [c + "</w>" for c in symbols] + [bos, eos]
        tok = _bpe({t: i for i, t in enumerate(names)}, [], bos=bos, eos=eos, unk=eos)
        tok.add_special_tokens([bos, eos])
        return cls(tok, model_max_length=model_max_length, pad_token=eos)

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """Token ids [N, model_max_length] (int32) of one prompt or a list of prompts."""
        if isinstance(texts, str):
            texts = [texts]
        encodings = self.tokenizer.encode_batch(list(texts))
        return np.asarray([e.ids for e in encodings], dtype=np.int32)


def initial_embeddings(
    text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, init_text: str, num: int = 1
) -> jax.Array:
    """Starting rows [num, hidden_size] (float32) for ``num`` placeholder embeddings.

    Each row is the mean of the token-table rows of ``init_text``'s tokens: one token's
    embedding for a single word such as ``"photo"`` (as diffusers' textual-inversion
    training initialises from ``--initializer_token``), the mean over a phrase otherwise.
    Raises ValueError when ``init_text`` has no tokens or uses a placeholder token.
    """
    if num < 1:
        raise ValueError(f"num={num} placeholder rows requested; expected at least 1.")
    ids = tokenizer.token_ids(init_text)
    size = text_encoder.num_embeddings
    if not ids or max(ids) >= size:
        raise ValueError(
            f"init_text {init_text!r} gives token ids {ids}; expected at least one token of the text encoder's "
            f"table ({size} rows). Use ordinary words, e.g. 'photo' or 'a small cat', not empty text or placeholders."
        )
    table = text_encoder.embeddings.token_embedding.embedding[...]
    row = jnp.mean(jnp.take(table, jnp.asarray(ids), axis=0).astype(jnp.float32), axis=0)
    return jnp.broadcast_to(row, (num, row.shape[0]))


def _bpe_from_files(vocab: Path, merges: Path, *, bos: str, eos: str, unk: str) -> tokenizers.Tokenizer:
    """The CLIP pipeline of ``tokenizers``: NFC + whitespace squash + lowercase, CLIP split, byte-level BPE."""
    vocab_map, merge_list = BPE.read_file(str(vocab), str(merges))
    return _bpe(vocab_map, merge_list, bos=bos, eos=eos, unk=unk)


def _bpe(vocab_map: dict[str, int], merge_list: list, *, bos: str, eos: str, unk: str) -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer(
        BPE(
            vocab_map,
            merge_list,
            unk_token=unk,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
        )
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    words = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(words), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    bos_id, eos_id = vocab_map.get(bos), vocab_map.get(eos)
    if bos_id is None or eos_id is None:
        raise ValueError(f"the vocabulary lacks the special tokens {bos!r} / {eos!r} a CLIP vocabulary needs.")
    tok.post_processor = processors.RobertaProcessing(
        (eos, eos_id), (bos, bos_id), trim_offsets=False, add_prefix_space=False
    )
    return tok
