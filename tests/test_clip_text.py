"""Tests for course.nn.clip_text: the CLIP tokenizer, the CLIP text transformer (parity with transformers) and MiniLM."""

import pytest
import torch

from course import parity
from course.nn import clip_text
from course.nn.clip_text import BOS_ID, EOS_ID, VOCAB_SIZE

# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_is_the_real_clip_vocabulary():
    tok = clip_text.clip_tokenizer()
    assert len(tok) == VOCAB_SIZE == 49408
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS_ID, EOS_ID, EOS_ID)
    # the ids OpenAI's CLIP tokenizer gives (as in transformers' and open_clip's documentation)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok("a red circle").input_ids == [49406, 320, 736, 7117, 49407]
    assert tok.convert_ids_to_tokens([7117, 3999]) == ["circle</w>", "square</w>"]


def test_vocabulary_layout_matches_open_clip():
    vocab, merges = clip_text.clip_vocabulary()
    assert len(vocab) == VOCAB_SIZE and len(merges) == 48894
    assert vocab["!"] == 0 and vocab["!</w>"] == 256  # bytes, then bytes + end-of-word
    assert vocab["".join(merges[0])] == 512  # the first merge
    assert vocab["<|startoftext|>"] == BOS_ID and vocab["<|endoftext|>"] == EOS_ID


def _reference_bpe(text_in: str) -> list[int]:
    """open_clip's SimpleTokenizer.encode (without ftfy), written out: an independent check."""
    import regex

    vocab, merges = clip_text.clip_vocabulary()
    ranks = {m: i for i, m in enumerate(merges)}
    byte_encoder = clip_text.bytes_to_unicode()
    pattern = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
    ids = []
    for piece in regex.findall(pattern, " ".join(text_in.split()).lower()):
        word = tuple("".join(byte_encoder[b] for b in piece.encode("utf-8")))
        word = word[:-1] + (word[-1] + "</w>",)
        while len(word) > 1:
            pairs = set(zip(word[:-1], word[1:]))
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        ids += [vocab[w] for w in word]
    return ids


@pytest.mark.parametrize("prompt", [
    "a drawing of a big purple triangle in the top left and a little cyan circle",
    "Astronaut riding a HORSE, 4k, trending on artstation!!",
    "Ünïcødé don't 123",
])
def test_tokenizer_agrees_with_reference_bpe(prompt):
    assert clip_text.clip_tokenizer()(prompt, add_special_tokens=False).input_ids == _reference_bpe(prompt)


def test_tokenize_pads_with_eos_and_truncates():
    out = clip_text.tokenize(["a red circle", "word " * 100])
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape == (2, 77) and ids.dtype == torch.long
    assert ids[0, :5].tolist() == [49406, 320, 736, 7117, 49407]
    assert (ids[0, 5:] == EOS_ID).all() and mask[0].sum() == 5  # padding is EOS, masked out
    assert ids[1, 0] == BOS_ID and ids[1, -1] == EOS_ID and mask[1].all()  # truncated, EOS kept
    assert clip_text.tokenize("a red circle", max_length=8)["input_ids"].shape == (1, 8)
    with pytest.raises(ValueError, match="max_length"):
        clip_text.tokenize("x", max_length=1)


# ----------------------------------------------------------------------------- text transformer

PARITY_CONFIGS = {
    "default (quick_gelu, 3 layers)": None,
    "gelu + projection": dict(vocab_size=500, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                              num_attention_heads=3, hidden_act="gelu", projection_dim=32, with_projection=True),
    "quick_gelu + projection, 4 layers": dict(vocab_size=300, hidden_size=32, intermediate_size=128, num_hidden_layers=4,
                                              num_attention_heads=2, projection_dim=16, with_projection=True),
    "legacy eos_token_id=2 (argmax pooling)": dict(vocab_size=400, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                                   num_attention_heads=8, eos_token_id=2, bos_token_id=0, pad_token_id=1),
    "gelu_new, 1 layer, context 8": dict(vocab_size=200, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=1, hidden_act="gelu_new", max_position_embeddings=8),
}


@pytest.mark.parametrize("name", list(PARITY_CONFIGS))
def test_parity_with_transformers(name):
    assert parity.compare("clip_text", PARITY_CONFIGS[name], seed=1) <= 1e-5


def test_parity_detects_a_wrong_weight():
    from transformers import CLIPTextConfig as HFConfig
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    ref = CLIPTextModel(HFConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, eos_token_id=49, bos_token_id=48, pad_token_id=49)).eval()
    ours = clip_text.from_transformers(ref)
    ids = torch.tensor([[48, 5, 7, 49, 49]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).pooled, ref(ids).pooler_output)
        ours.layers[1].fc1.weight[0, 0] += 0.1  # one weight (a constant over a whole row would vanish in a LayerNorm)
        assert (ours(ids).pooled - ref(ids).pooler_output).abs().max() > 1e-3


def test_outputs_shapes_and_causality():
    config = clip_text.CLIPTextConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                 num_attention_heads=4, eos_token_id=99, projection_dim=8)
    model = clip_text.CLIPTextTransformer(config).eval()
    ids = torch.randint(0, 98, (2, 10))
    ids[:, 6:] = 99
    out = model(ids)
    assert out.last_hidden_state.shape == (2, 10, 32) and out.pooled.shape == (2, 32) and out.text_embeds.shape == (2, 8)
    assert len(out.hidden_states) == 4 and out.penultimate is out.hidden_states[2]
    torch.testing.assert_close(out.pooled, out.last_hidden_state[:, 6])
    changed = ids.clone()
    changed[:, 8] = 5  # a token after position 6 cannot change positions 0..6 (causal mask)
    torch.testing.assert_close(model(changed).last_hidden_state[:, :7], out.last_hidden_state[:, :7])
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, 78, dtype=torch.long))


def test_eos_positions_both_rules():
    ids = torch.tensor([[BOS_ID, 320, EOS_ID, 0, 0], [BOS_ID, EOS_ID, EOS_ID, EOS_ID, EOS_ID]])  # "!"- and EOS-padding
    assert clip_text.eos_positions(ids, EOS_ID).tolist() == [2, 1]
    assert clip_text.eos_positions(ids, 2).tolist() == [2, 1]  # legacy argmax: the same for real tokenizer output
    added = torch.tensor([[BOS_ID, 49408, EOS_ID, EOS_ID]])  # a token added after the vocabulary
    assert clip_text.eos_positions(added, EOS_ID).tolist() == [2] and clip_text.eos_positions(added, 2).tolist() == [1]


def test_presets_match_transformers_parameter_counts():
    from transformers import CLIPTextConfig as HFConfig
    from transformers import CLIPTextModel

    config = clip_text.get_preset("clip-vit-l-14")
    with torch.device("meta"):
        ours = sum(p.numel() for p in clip_text.CLIPTextTransformer(config).parameters())
        ref = sum(p.numel() for p in CLIPTextModel(HFConfig(hidden_size=768, intermediate_size=3072,
                                                             num_attention_heads=12)).parameters())
    assert ours == ref == 123_060_480
    with pytest.raises(KeyError, match="known presets"):
        clip_text.get_preset("clip-vit-xxl")
    with pytest.raises(ValueError, match="divisible"):
        clip_text.CLIPTextConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="hidden_act"):
        clip_text.CLIPTextConfig(hidden_act="relu")


# ----------------------------------------------------------------------------- MiniLM


def test_minilm_parameters_and_embeddings():
    assert sum(p.numel() for p in clip_text.minilm().model.parameters()) == 22_713_216  # 22.7 M
    e = clip_text.minilm_embed(["a photo of a cat sitting on a sofa", "a picture of a kitten on a couch",
                           "the stock market fell sharply today", "a red circle"])
    assert e.shape == (4, 384)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(4))
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 3]  # paraphrases are closer than unrelated text


def test_minilm_mean_pool_ignores_padding():
    alone = clip_text.minilm_embed("a red circle")
    padded = clip_text.minilm_embed(["a red circle", "a much longer sentence that makes the first one padded"])[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=0)
    hidden, mask = clip_text.minilm_encode(["a red circle", "a red circle in the top left corner"])
    assert hidden.shape[:2] == mask.shape and mask[0].sum() < mask[1].sum()


# ----------------------------------------------------------------------------- exercise check


def test_check_causal_mask_passes_the_solution_and_fails_mistakes():
    from course.exercises.ch03 import check_causal_mask
    from course.exercises.runner import ExerciseFailed

    def solution(T, attention_mask=None):
        mask = torch.ones(T, T, dtype=torch.bool).tril()[None, None]
        return mask if attention_mask is None else mask & attention_mask.bool()[:, None, None, :]

    def sees_the_future(T, attention_mask=None):  # triu: query i sees keys j >= i
        mask = torch.ones(T, T, dtype=torch.bool).triu()[None, None]
        return mask if attention_mask is None else mask & attention_mask.bool()[:, None, None, :]

    def ignores_padding(T, attention_mask=None):
        return torch.ones(T, T, dtype=torch.bool).tril()[None, None]

    def stub(T, attention_mask=None):
        raise NotImplementedError("write causal_mask")

    assert check_causal_mask(solution)
    for wrong in (sees_the_future, ignores_padding, stub):
        with pytest.raises(ExerciseFailed):
            check_causal_mask(wrong)
