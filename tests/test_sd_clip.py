"""Parity of jot's CLIP text encoder and tokenizer with transformers on tiny random configs."""

import json

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from tokenizers.pre_tokenizers import ByteLevel

from jot.models.sd import CLIPTextModel, CLIPTokenizer, load_module, read_weights

torch.set_num_threads(1)  # the test machine is small and shared; more threads only spin
FAST_COMPILE = {"xla_backend_optimization_level": 0}

MERGES = ["c a", "ca t</w>", "d o", "do g</w>", "p h", "ph o", "pho t", "phot o</w>", "t h", "th e</w>", "o f</w>"]
TEXTS = [
    "a photo of the cat",
    "  A   PHOTO of   the DOG!!  can't stop 123 café ",
    "the cat " * 50,  # longer than 77 tokens: truncated, still ends with <|endoftext|>
    "",
]


def write_vocab(folder) -> None:
    """A tiny CLIP-style byte-level BPE vocabulary: 256 bytes, their word-final forms, a few merges."""
    chars = sorted(ByteLevel.alphabet())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")


def tiny_clip_config(hidden_act: str, vocab_size: int) -> transformers.CLIPTextConfig:
    return transformers.CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        eos_token_id=vocab_size - 1,
        bos_token_id=vocab_size - 2,
    )


def _reference_ids(tok, texts, **kw):
    return np.asarray(tok(texts, padding="max_length", max_length=77, truncation=True, **kw).input_ids)


@pytest.mark.parametrize("pad_token", ["<|endoftext|>", "!"], ids=["sd1-pad", "sd2-pad"])
def test_tokenizer_matches_transformers(tmp_path, pad_token):
    write_vocab(tmp_path / "files")
    ref = transformers.CLIPTokenizer.from_pretrained(tmp_path / "files", model_max_length=77, pad_token=pad_token)
    expected = _reference_ids(ref, TEXTS)
    # vocab.json + merges.txt (+ tokenizer_config.json) as in the stable-diffusion-v1-5 repo
    (tmp_path / "files" / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 77, "pad_token": pad_token})
    )
    from_files = CLIPTokenizer.from_dir(tmp_path / "files")(TEXTS)
    # tokenizer.json as transformers 5 saves it
    ref.save_pretrained(tmp_path / "saved")
    from_json = CLIPTokenizer.from_dir(tmp_path / "saved")(TEXTS)
    assert expected.shape == (len(TEXTS), 77)
    assert expected[2, -1] == ref.eos_token_id and expected[0, 0] == ref.bos_token_id
    assert (expected[0] == ref.convert_tokens_to_ids(pad_token)).sum() > 60
    np.testing.assert_array_equal(from_files, expected)
    np.testing.assert_array_equal(from_json, expected)
    assert from_files.dtype == np.int32


def test_tokenizer_missing_files_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"neither tokenizer.json nor vocab.json \+ merges.txt"):
        CLIPTokenizer.from_dir(tmp_path)


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"], ids=["sd1-quick_gelu", "sd2-gelu"])
def test_text_encoder_matches_transformers(tmp_path, hidden_act):
    write_vocab(tmp_path / "tok")
    tok = CLIPTokenizer.from_dir(tmp_path / "tok")
    vocab_size = tok.tokenizer.get_vocab_size()
    torch.manual_seed(0)
    ref = transformers.CLIPTextModel(tiny_clip_config(hidden_act, vocab_size)).eval()
    ref.save_pretrained(tmp_path / "te", safe_serialization=True)
    cfg = json.loads((tmp_path / "te" / "config.json").read_text())
    model = load_module(
        lambda: CLIPTextModel(cfg, rngs=nnx.Rngs(0)), read_weights(tmp_path / "te", "model"), source="te"
    )
    ids = tok(TEXTS)
    mask = (np.arange(77)[None] < np.array([[8], [20], [77], [2]])).astype(np.int32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(ids.astype(np.int64))).last_hidden_state.numpy()
        expected_masked = ref(
            torch.from_numpy(ids.astype(np.int64)), attention_mask=torch.from_numpy(mask)
        ).last_hidden_state.numpy()
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m), compiler_options=FAST_COMPILE)
    for name, got, want in (
        ("causal", fn(state, ids, None), expected),
        ("causal+padding mask", fn(state, ids, mask), expected_masked),
    ):
        got = np.asarray(got)
        scale, err = float(np.abs(want).max()), float(np.abs(got - want).max())
        print(f"clip {hidden_act} {name}: max abs err {err:.2e}, output scale {scale:.3f}")
        assert got.shape == (len(TEXTS), 77, 32)
        assert scale > 0.5
        assert err <= 1e-4 * max(1.0, scale)


def test_text_encoder_rejects_long_input():
    cfg = tiny_clip_config("quick_gelu", 600).to_dict()
    model = nnx.eval_shape(lambda: CLIPTextModel(cfg, rngs=nnx.Rngs(0)))  # shapes only: the check comes first
    with pytest.raises(ValueError, match=r"L <= max_position_embeddings=77, got shape \(1, 80\)"):
        model(np.zeros((1, 80), np.int32))
    with pytest.raises(ValueError, match=r"hidden_act='relu' is not supported"):
        CLIPTextModel({**cfg, "hidden_act": "relu"}, rngs=nnx.Rngs(0))
