"""Textual inversion on the text side: placeholder tokens, extra embedding rows, diffusers' file."""

import json

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from flax import nnx
from test_sd_clip import FAST_COMPILE, tiny_clip_config, write_vocab
from test_sd_load import pipeline  # noqa: F401  (the tiny saved StableDiffusionPipeline fixture)

from jot.models.sd import CLIPTextModel, CLIPTokenizer, load_module, read_weights
from jot.models.sd.clip import initial_embeddings
from jot.models.sd.textual_inversion import expand_prompt, extend, load_embeddings, save_embeddings

torch.set_num_threads(1)  # the test machine is small and shared; more threads only spin

PLACEHOLDERS = ["<cat>", "<Dog>"]
PROMPTS = [
    "a photo of <cat>",
    "<cat> on a mat",
    "A <CAT>, <dog> x<cat>y",
    "a <Dog> photo<cat>photo of the dog",
    "a photo of the cat",  # no placeholder
]


def _tokenizers(tmp_path):
    write_vocab(tmp_path / "tok")
    ref = transformers.CLIPTokenizer.from_pretrained(tmp_path / "tok", model_max_length=77)
    return CLIPTokenizer.from_dir(tmp_path / "tok"), ref


def _ref_ids(ref, texts):
    return np.asarray(ref(texts, padding="max_length", max_length=77, truncation=True).input_ids)


def test_add_tokens_matches_transformers(tmp_path):
    tok, ref = _tokenizers(tmp_path)
    size = len(tok)
    assert size == len(ref) == tok.vocab_size == 525
    ids = tok.add_tokens(PLACEHOLDERS)
    ref.add_tokens(PLACEHOLDERS)
    assert ids == [size, size + 1] == ref.convert_tokens_to_ids(PLACEHOLDERS)
    assert len(tok) == tok.vocab_size == len(ref) == size + 2
    assert tok.added_tokens == PLACEHOLDERS
    got, want = tok(PROMPTS), _ref_ids(ref, PROMPTS)
    np.testing.assert_array_equal(got, want)
    assert got[0, 4] == size and got[0, 5] == tok.tokenizer.token_to_id("<|endoftext|>")  # "<cat>" is one token
    assert (got[:4] >= size).any(axis=1).all() and not (got[4] >= size).any()
    assert tok.add_tokens(["<x>"]) == [size + 2]


def test_add_tokens_errors(tmp_path):
    tok, _ = _tokenizers(tmp_path)
    tok.add_tokens(["<cat>"])
    size = len(tok)
    with pytest.raises(ValueError, match=r"token '<cat>' is already a token of the tokenizer .*Pick another"):
        tok.add_tokens(["<new>", "<cat>"])
    with pytest.raises(ValueError, match=r"placeholder token 'photo</w>' is already a token of the tokenizer"):
        tok.add_tokens(["photo</w>"])
    with pytest.raises(ValueError, match=r"placeholder token '<a>' is repeated in the tokens to add"):
        tok.add_tokens(["<a>", "<a>"])
    with pytest.raises(ValueError, match=r"placeholder token '' must be a non-empty string"):
        tok.add_tokens([""])
    assert len(tok) == size and tok.added_tokens == ["<cat>"]  # nothing added by a failed call


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """A tiny transformers CLIPTextModel and jot's copy of it (same weights)."""
    root = tmp_path_factory.mktemp("te")
    write_vocab(root / "tok")
    vocab_size = len(CLIPTokenizer.from_dir(root / "tok"))
    torch.manual_seed(0)
    ref = transformers.CLIPTextModel(tiny_clip_config("quick_gelu", vocab_size)).eval()
    ref.save_pretrained(root / "te", safe_serialization=True)
    cfg = json.loads((root / "te" / "config.json").read_text())
    model = load_module(lambda: CLIPTextModel(cfg, rngs=nnx.Rngs(0)), read_weights(root / "te", "model"), source="te")
    return ref, model, root / "tok"


def test_extra_embeddings_match_resized_transformers(encoders):
    ref, model, tok_dir = encoders
    tok = CLIPTokenizer.from_dir(tok_dir)
    size = model.num_embeddings
    assert size == len(tok)
    ids_added = tok.add_tokens(PLACEHOLDERS)
    extra = np.random.default_rng(0).standard_normal((2, 32)).astype(np.float32)
    ids = tok(PROMPTS)

    resized = transformers.CLIPTextModel(ref.config).eval()
    resized.load_state_dict(ref.state_dict())
    resized.resize_token_embeddings(size + 2)
    with torch.no_grad():
        resized.get_input_embeddings().weight[ids_added] = torch.from_numpy(extra)
        want = resized(torch.from_numpy(ids.astype(np.int64))).last_hidden_state.numpy()

    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, i, e: nnx.merge(graphdef, s)(i, extra_embeddings=e), compiler_options=FAST_COMPILE)
    for name, got in (("jit", fn(state, ids, extra)), ("eager", model(ids, extra_embeddings=extra))):
        got = np.asarray(got)
        err, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
        print(f"extra_embeddings vs resized transformers ({name}): max abs err {err:.2e}, output scale {scale:.3f}")
        assert got.shape == (len(PROMPTS), 77, 32) and scale > 0.5
        assert err <= 1e-5
    # the prompt without a placeholder reads only the table: same as without extra rows
    plain = jax.jit(lambda s, i: nnx.merge(graphdef, s)(i), compiler_options=FAST_COMPILE)
    np.testing.assert_array_equal(np.asarray(fn(state, ids[4:], extra)), np.asarray(plain(state, ids[4:])))


def test_gradient_reaches_only_extra_rows(encoders):
    _, model, tok_dir = encoders
    tok = CLIPTokenizer.from_dir(tok_dir)
    tok.add_tokens(PLACEHOLDERS)
    graphdef, state = nnx.split(model)
    table_before = np.array(model.embeddings.token_embedding.embedding[...])

    def loss(extra, ids):  # the model's weights are constants here: only `extra` is differentiated
        out = nnx.merge(graphdef, state)(ids, extra_embeddings=extra)
        return jnp.sum(out**2)

    grad = jax.jit(jax.grad(loss), compiler_options=FAST_COMPILE)
    extra = initial_embeddings(model, tok, "photo", 2)
    with_cat = np.asarray(grad(extra, tok(["a photo of <cat>"])))
    with_both = np.asarray(grad(extra, tok(["<dog> and <cat>"])))
    without = np.asarray(grad(extra, tok(["a photo of the cat"])))
    print(f"grad norms: <cat> only {np.linalg.norm(with_cat, axis=1)}, none {np.abs(without).max()}")
    assert with_cat.shape == (2, 32)
    assert np.abs(with_cat[0]).max() > 1e-3 and not with_cat[1].any()
    assert (np.abs(with_both).max(axis=1) > 1e-3).all()
    assert not without.any()
    np.testing.assert_array_equal(np.asarray(model.embeddings.token_embedding.embedding[...]), table_before)


def test_out_of_range_ids(encoders):
    _, model, _ = encoders
    size = model.num_embeddings
    ids = np.full((1, 77), 3, np.int32)
    ids[0, 5] = size + 1
    extra = np.ones((1, 32), np.float32)
    with pytest.raises(ValueError, match=rf"input_ids \[{size + 1}\] are outside \[0, {size}\) .*pass extra_emb"):
        model(ids)
    with pytest.raises(ValueError, match=rf"input_ids \[{size + 1}\] are outside \[0, {size + 1}\) .*1 extra_emb"):
        model(ids, extra_embeddings=extra)
    with pytest.raises(ValueError, match=r"extra_embeddings must be \[K, hidden_size=32\] .*got shape \(32,\)"):
        model(ids, extra_embeddings=np.ones(32, np.float32))
    # under jit ids cannot be checked: a prompt with an unknown id gives NaN (never another token's row)
    graphdef, state = nnx.split(model)
    out = jax.jit(lambda s, i, e: nnx.merge(graphdef, s)(i, extra_embeddings=e), compiler_options=FAST_COMPILE)(
        state, np.concatenate([ids, np.full_like(ids, size)]), extra
    )
    assert np.isnan(np.asarray(out)[0]).all() and np.isfinite(np.asarray(out)[1]).all()


def test_initial_embeddings(encoders):
    _, model, tok_dir = encoders
    tok = CLIPTokenizer.from_dir(tok_dir)
    table = np.asarray(model.embeddings.token_embedding.embedding[...])
    photo = tok.tokenizer.token_to_id("photo</w>")
    rows = np.asarray(initial_embeddings(model, tok, "photo", 3))
    assert rows.shape == (3, 32) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows, np.broadcast_to(table[photo], (3, 32)))
    phrase = tok.token_ids("the cat")
    mean = np.asarray(initial_embeddings(model, tok, "the cat"))[0]
    np.testing.assert_allclose(mean, table[phrase].mean(0), atol=1e-6)
    tok.add_tokens(["<cat>"])
    with pytest.raises(ValueError, match=r"init_text '<cat>' gives token ids \[525\]"):
        initial_embeddings(model, tok, "<cat>")


def test_diffusers_loads_saved_embeddings(pipeline, tmp_path):  # noqa: F811
    _, folder = pipeline
    rng = np.random.default_rng(1)
    cat = rng.standard_normal(32).astype(np.float32)
    dog = rng.standard_normal((2, 32)).astype(np.float32)  # two rows: tokens <dog>, <dog>_1
    cat_file = save_embeddings(tmp_path / "cat", {"<cat>": cat})
    dog_file = save_embeddings(tmp_path / "dog.safetensors", {"<dog>": jnp.asarray(dog)})
    assert cat_file == tmp_path / "cat" / "learned_embeds.safetensors"
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    pipe.load_textual_inversion([str(cat_file.parent), str(dog_file)])

    tok = CLIPTokenizer.from_dir(folder / "tokenizer")
    te_config = json.loads((folder / "text_encoder" / "config.json").read_text())
    te = load_module(
        lambda: CLIPTextModel(te_config, rngs=nnx.Rngs(0)), read_weights(folder / "text_encoder", "model"), source="te"
    )
    embeddings = load_embeddings([cat_file.parent, dog_file], hidden_size=te.config.hidden_size)
    assert sorted(embeddings) == ["<cat>", "<dog>"] and embeddings["<cat>"].shape == (1, 32)
    ids_added, extra = extend(tok, embeddings, text_encoder=te)
    assert ids_added == pipe.tokenizer.convert_tokens_to_ids(["<cat>", "<dog>", "<dog>_1"])
    assert extra.shape == (3, 32)

    prompts = ["a photo of <cat>", "<dog> on a mat with <cat>"]
    ref_prompts = pipe.maybe_convert_prompt(prompts, pipe.tokenizer)
    assert ref_prompts == ["a photo of <cat>", "<dog> <dog>_1 on a mat with <cat>"]
    assert [expand_prompt(p, tok) for p in prompts] == ref_prompts
    ids = tok([expand_prompt(p, tok) for p in prompts])
    np.testing.assert_array_equal(ids, _ref_ids(pipe.tokenizer, ref_prompts))
    with torch.no_grad():
        want = pipe.text_encoder(torch.from_numpy(ids.astype(np.int64))).last_hidden_state.numpy()
    graphdef, state = nnx.split(te)
    got = np.asarray(
        jax.jit(lambda s, i, e: nnx.merge(graphdef, s)(i, extra_embeddings=e), compiler_options=FAST_COMPILE)(
            state, ids, extra
        )
    )
    err = float(np.abs(got - want).max())
    print(f"diffusers load_textual_inversion vs jot extend: max abs err {err:.2e}, scale {np.abs(want).max():.3f}")
    assert err <= 1e-5


def test_load_embeddings_errors_and_variants(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing.safetensors does not exist"):
        load_embeddings(tmp_path / "missing.safetensors")
    save_embeddings(tmp_path / "wide.safetensors", {"<w>": np.ones((1, 48), np.float32)})
    with pytest.raises(ValueError, match=r"embedding '<w>' in .*wide.safetensors has width 48 but .*hidden_size is 32"):
        load_embeddings(tmp_path / "wide.safetensors", hidden_size=32)
    (tmp_path / "notes.safetensors").write_text("not a tensor file")
    with pytest.raises(ValueError, match=r"notes.safetensors is not a safetensors file; jot reads safetensors only"):
        load_embeddings(tmp_path / "notes.safetensors")
    torch.save({"<p>": torch.ones(32)}, tmp_path / "learned_embeds.bin")
    with pytest.raises(ValueError, match=r"learned_embeds.bin is a pickled PyTorch file"):
        load_embeddings(tmp_path / "learned_embeds.bin")
    two = {"a": np.ones(32, np.float32), "b": np.ones(32, np.float32)}
    safetensors.numpy.save_file(two, tmp_path / "two.safetensors")
    with pytest.raises(ValueError, match=r"two.safetensors holds 2 tensors"):
        load_embeddings(tmp_path / "two.safetensors")
    with pytest.raises(ValueError, match=r"save_embeddings writes one token per file"):
        save_embeddings(tmp_path, {"<a>": np.ones(32), "<b>": np.ones(32)})
    # stable-diffusion-webui's variant: one 'emb_params' tensor, the file name is the token
    safetensors.numpy.save_file({"emb_params": np.full((2, 32), 0.5, np.float16)}, tmp_path / "style.safetensors")
    read = load_embeddings([tmp_path / "style.safetensors", tmp_path / "wide.safetensors"], tokens=[None, "<v>"])
    assert sorted(read) == ["<v>", "style"] and read["style"].shape == (2, 32)
    with pytest.raises(ValueError, match=r"token 'style' of .* was already read"):
        load_embeddings([tmp_path / "style.safetensors"] * 2)


def test_extend_checks_text_encoder(encoders):
    _, model, tok_dir = encoders
    tok = CLIPTokenizer.from_dir(tok_dir)
    with pytest.raises(ValueError, match=r"embeddings have width 16 but the text encoder's hidden_size is 32"):
        extend(tok, {"<a>": np.ones(16)}, text_encoder=model)
    tok.add_tokens(["<b>"])
    with pytest.raises(ValueError, match=r"the tokenizer has 526 ids but the text encoder's token table has 525 rows"):
        extend(tok, {"<a>": np.ones(32)}, text_encoder=model)
    with pytest.raises(ValueError, match=r"placeholder token '<b>' is already a token"):
        extend(tok, {"<b>": np.ones(32)})
