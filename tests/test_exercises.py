"""The exercise framework: run_cases passes right answers and explains wrong ones in plain words."""

import numpy as np
import pytest
import torch

from course.exercises.runner import Case, ExerciseFailed, available_checks, compare, run_cases

# --- a toy exercise: scale an image batch by sqrt(alpha_bar), broadcast over (C, H, W) ---------


def toy_q_mean(x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    return alpha_bar.sqrt().view(-1, 1, 1, 1) * x0  # (B, C, H, W)


def toy_cases():
    g = torch.Generator().manual_seed(0)
    return [
        Case(args=(torch.randn(4, 1, 8, 8, generator=g), torch.rand(4, generator=g)), label="batch of 4"),
        (torch.randn(2, 3, 4, 4, generator=g), torch.tensor([1.0, 0.25])),
    ]


def check_toy(fn):
    return run_cases(fn, toy_q_mean, toy_cases(), name="q_mean",
                     hint={"shape": "did you broadcast alpha_bar over the image dimensions?"})


def test_correct_solution_passes_and_prints_one_line(capsys):
    def learner(x0, alpha_bar):
        return x0 * alpha_bar[:, None, None, None] ** 0.5

    assert check_toy(learner) is True
    assert capsys.readouterr().out == "✓ q_mean: all 2 checks passed\n"


def test_stub_says_replace_not_implemented():
    def stub(x0, alpha_bar):
        raise NotImplementedError("Exercise: write your solution here")

    with pytest.raises(ExerciseFailed, match=r"raised NotImplementedError: replace the `raise NotImplementedError`"):
        check_toy(stub)


def test_wrong_shape_names_shapes_and_hint():
    def no_broadcast(x0, alpha_bar):
        return alpha_bar.sqrt()[:, None] * x0.flatten(1)[:, :3]  # (B, 3)

    with pytest.raises(ExerciseFailed) as err:
        check_toy(no_broadcast)
    msg = str(err.value)
    assert "q_mean returned shape (4, 3) but expected (4, 1, 8, 8)" in msg
    assert "did you broadcast alpha_bar over the image dimensions?" in msg
    assert "check 1 of 2; batch of 4" in msg and "tensor (4, 1, 8, 8) float32" in msg


def test_wrong_values_report_first_index_got_and_expected():
    def forgot_sqrt(x0, alpha_bar):
        return alpha_bar.view(-1, 1, 1, 1) * x0

    with pytest.raises(ExerciseFailed, match=r"q_mean: values differ at index \(0, 0, 0, 0\): got .* expected .*largest difference"):
        check_toy(forgot_sqrt)


def test_second_case_failure_is_located():
    def only_first_right(x0, alpha_bar):
        out = toy_q_mean(x0, alpha_bar)
        return out if x0.shape[0] == 4 else out + 1

    with pytest.raises(ExerciseFailed, match=r"check 2 of 2"):
        check_toy(only_first_right)


def test_dtype_device_type_and_nan_mistakes():
    with pytest.raises(ExerciseFailed, match=r"dtype torch.float64 but expected torch.float32"):
        check_toy(lambda x0, a: toy_q_mean(x0, a).double())
    with pytest.raises(ExerciseFailed, match=r"returned a numpy array but expected a torch.Tensor"):
        check_toy(lambda x0, a: toy_q_mean(x0, a).numpy())
    with pytest.raises(ExerciseFailed, match=r"q_mean returned nan at index \(0, 0, 0, 0\) where .* was expected"):
        check_toy(lambda x0, a: toy_q_mean(x0, a) * float("nan"))


def test_learner_exception_is_wrapped_with_context():
    def typo(x0, alpha_bar):
        return x0 @ alpha_bar  # wrong shapes for a matmul

    with pytest.raises(ExerciseFailed, match=r"q_mean: your function raised RuntimeError: .*\n  \(check 1 of 2") as err:
        check_toy(typo)
    assert isinstance(err.value.__cause__, RuntimeError)


def test_in_place_edit_of_input_is_caught():
    def in_place(x0, alpha_bar):
        return x0.mul_(alpha_bar.sqrt().view(-1, 1, 1, 1))

    with pytest.raises(ExerciseFailed, match=r"changed its input argument 1 in place"):
        check_toy(in_place)


def test_tolerance_is_respected():
    def tiny_error(x0, alpha_bar):
        return toy_q_mean(x0, alpha_bar) + 1e-7

    assert check_toy(tiny_error)
    with pytest.raises(ExerciseFailed):
        run_cases(tiny_error, toy_q_mean, toy_cases(), name="q_mean", atol=1e-9, rtol=0.0)


def test_numbers_tuples_dicts_and_numpy():
    def ref(a, b):
        return {"sum": a + b, "pair": (np.array([a, b], dtype=np.float32), int(a * b))}

    assert run_cases(ref, ref, [(1.0, 2.0), {"a": 0.5, "b": 4.0}], name="stats")

    def wrong_pair(a, b):
        out = ref(a, b)
        out["pair"] = (out["pair"][0], out["pair"][1] + 1)
        return out

    with pytest.raises(ExerciseFailed, match=r"stats returned 3 in output\['pair'\]\[1\] but expected 2"):
        run_cases(wrong_pair, ref, [(1.0, 2.0)], name="stats")
    with pytest.raises(ExerciseFailed, match=r"returned keys \['sum'\] but expected \['pair', 'sum'\]"):
        run_cases(lambda a, b: {"sum": a + b}, ref, [(1.0, 2.0)], name="stats")
    # a 0-d tensor where a number is expected is accepted; a tuple of the wrong length is not
    assert run_cases(lambda x: torch.tensor(x * 2.0), lambda x: x * 2.0, [3.0], name="twice")
    with pytest.raises(ExerciseFailed, match=r"a tuple of 1 but expected 2 items"):
        run_cases(lambda x: (x,), lambda x: (x, x), [3.0], name="pair")


def test_random_functions_compare_under_the_same_seed():
    def ref(n):
        return torch.randn(n)

    def learner(n):
        return torch.randn(n)

    assert run_cases(learner, ref, [3, 5], name="noise")
    with pytest.raises(ExerciseFailed):
        run_cases(lambda n: torch.rand(n), ref, [3], name="noise")


def test_framework_errors():
    with pytest.raises(ValueError, match="no cases"):
        run_cases(toy_q_mean, toy_q_mean, [], name="q_mean")
    with pytest.raises(ExerciseFailed, match=r"expected a function.*without \(\)"):
        run_cases(toy_q_mean(torch.ones(1, 1, 1, 1), torch.ones(1)), toy_q_mean, toy_cases(), name="q_mean")
    with pytest.raises(RuntimeError, match="the reference for q_mean failed"):
        run_cases(toy_q_mean, toy_q_mean, [(torch.ones(2), "not a tensor")], name="q_mean")


def test_compare_is_none_when_equal_and_checks_listed():
    x = torch.arange(6.0).view(2, 3)
    assert compare(x, x.clone()) is None
    assert compare(x, x + 1)[0] == "values"
    assert all(name.startswith("check_") for name in available_checks())


# --- the chapter checkers added for issue 11: a right answer passes, a classic mistake is explained ---


def test_bpe_checker_against_the_real_tokenizer(capsys):
    from course.exercises.ch03 import check_bpe

    def bpe(word, merges):
        ranks = {pair: i for i, pair in enumerate(merges)}
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            rank, i = min((ranks.get(p, len(ranks)), i) for i, p in enumerate(zip(parts, parts[1:])))
            if rank == len(ranks):
                break
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]  # first occurrence only: fine for these words
        return parts

    assert check_bpe(bpe) is True
    assert "tyrannosaurus" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed, match="lowest rank"):
        check_bpe(lambda word, merges: list(word[:-1]) + [word[-1] + "</w>"])  # no merges at all


def test_resnet_block_and_unet_forward_checkers():
    import torch.nn.functional as F

    from course.exercises.ch04 import check_resnet_block, check_unet_forward

    def resnet_block(block, x, temb):
        h = block.conv1(F.silu(block.norm1(x)))
        h = h + block.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = block.conv2(block.dropout(F.silu(block.norm2(h))))
        return (x if block.conv_shortcut is None else block.conv_shortcut(x)) + h

    def no_time(block, x, temb):
        h = block.conv2(F.silu(block.norm2(block.conv1(F.silu(block.norm1(x))))))
        return (x if block.conv_shortcut is None else block.conv_shortcut(x)) + h

    assert check_resnet_block(resnet_block) is True
    with pytest.raises(ExerciseFailed, match="time_emb_proj"):
        check_resnet_block(no_time)

    def unet_forward(net, x, t, swap=False):
        emb = net.time_embed(t, x.shape[0], x.device)
        h = net.conv_in(x)
        skips = [h]
        for block in net.down_blocks:
            for resnet in block.resnets:
                h = resnet(h, emb)
                skips.append(h)
            if block.downsamplers is not None:
                h = block.downsamplers[0](h)
                skips.append(h)
        h = net.mid_block(h, emb)
        for block in net.up_blocks:
            for resnet in block.resnets:
                s = skips.pop()
                h = resnet(torch.cat([s, h] if swap else [h, s], dim=1), emb)
            if block.upsamplers is not None:
                h = block.upsamplers[0](h)
        return net.conv_out(net.conv_act(net.conv_norm_out(h)))

    assert check_unet_forward(unet_forward) is True
    with pytest.raises(ExerciseFailed, match="skips.pop"):
        check_unet_forward(lambda net, x, t: unet_forward(net, x, t, swap=True))
