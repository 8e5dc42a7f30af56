"""Chapter 03's exercise checkers (see `course.exercises.runner` for how a checker works)."""

from __future__ import annotations

from course.exercises.runner import Case, run_cases


def check_causal_mask(fn) -> bool:
    """Chapter 03: the learner's `causal_mask(T, attention_mask=None)` against `course.nn.clip_text.causal_mask`."""
    import torch

    from course.nn.clip_text import causal_mask

    padding = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    cases = [
        Case(args=(1,), label="a single token sees itself"),
        Case(args=(4,), label="T = 4, no padding: (1, 1, 4, 4)"),
        Case(args=(7,), label="T = 7"),
        Case(args=(6, padding), label="T = 6 with a padding mask of 2 rows: (2, 1, 6, 6), no query may see a padding key"),
    ]
    return run_cases(fn, lambda T, attention_mask=None: causal_mask(T, attention_mask), cases, name="causal_mask", hint={
        "values": "True means 'may attend': query i (row) sees keys j <= i (columns), so the mask is lower "
                  "triangular (torch.tril), diagonal included; with a padding mask, also set False every "
                  "column j whose attention_mask is 0",
        "shape": "return (1, 1, T, T) without a padding mask and (B, 1, T, T) with one, so it broadcasts over heads",
        "dtype": "return a boolean mask (torch.bool), True = attend",
    })


def check_clip_loss(fn) -> bool:
    """Chapter 03: the learner's `clip_loss(image_embeds, text_embeds, logit_scale)` against `course.nn.mini_clip.clip_loss`."""
    import torch
    import torch.nn.functional as F

    from course.nn.mini_clip import clip_loss

    g = torch.Generator().manual_seed(3)

    def unit(*shape):
        return F.normalize(torch.randn(*shape, generator=g), dim=-1)

    img, txt = unit(6, 8), unit(6, 8)
    near = F.normalize(img + 0.3 * unit(6, 8), dim=-1)
    cases = [
        Case(args=(img, txt, torch.tensor(1.0)), label="B = 6 random pairs, scale 1"),
        Case(args=(img, near, torch.tensor(14.3)), label="captions close to their images, scale 1/0.07"),
        Case(args=(img[:3], img[:3].flip(0), torch.tensor(10.0)), label="every caption matches another pair's image"),
        Case(args=(unit(2, 4), unit(2, 4), torch.tensor(100.0)), label="B = 2, the largest scale CLIP allows"),
    ]
    return run_cases(fn, clip_loss, cases, name="clip_loss", atol=1e-5, hint={
        "values": "logits = logit_scale * image_embeds @ text_embeds.T is (B, B) and the right match of row i is "
                  "column i; average the cross-entropy over images (rows) and the one over captions (the "
                  "transpose): a one-sided loss, a missing scale or the wrong labels give other numbers",
        "shape": "return one scalar, the mean over the batch",
    })


def check_bpe(fn) -> bool:
    """Chapter 03: the learner's `bpe(word, merges)` against the ids of the real `CLIPTokenizer`.

    The reference is transformers' tokenizer built from the same file (`course.nn.clip_text`):
    for one lower-case word, its pieces are the tokens between BOS and EOS.
    """
    from course.nn.clip_text import clip_tokenizer, clip_vocabulary

    vocab, merges = clip_vocabulary()
    tok = clip_tokenizer()

    def reference(word, merges):
        return tok.convert_ids_to_tokens(tok(word).input_ids[1:-1])  # drop BOS and EOS

    words = [("a", "a one-letter word ends with </w>"), ("circle", "a word that is one token"),
             ("circles", "a frequent word with its own merge"), ("tyrannosaurus", "a rare word: several pieces"),
             ("astronaut", "a word merged in several rounds"), ("jekyll", "the word of the very last merge"),
             ("zzxq", "a word with almost no merges")]
    cases = [Case(args=(word, merges), label=label) for word, label in words]
    ok = run_cases(fn, reference, cases, name="bpe", hint={
        "values": "start from the word's characters, the last one with '</w>' appended; then repeatedly merge the "
                  "adjacent pair with the lowest rank (its index in merges) everywhere it occurs, until no adjacent "
                  "pair is in merges. Merging the first pair found, or the most frequent one, gives other pieces",
        "shape": "a different number of pieces: merge the adjacent pair with the lowest rank, every occurrence, "
                 "and repeat until no adjacent pair is in merges (a whole frequent word ends as one piece)",
        "type": "return a list of strings, the pieces (e.g. ['circle</w>'])",
    })
    if ok:
        pieces = fn("tyrannosaurus", merges)
        print(f"  'tyrannosaurus' -> {pieces} -> ids {[vocab[p] for p in pieces]} (CLIPTokenizer: {tok('tyrannosaurus').input_ids[1:-1]})")
    return ok
