"""The command line and the model zoo: names, errors that list what is known, doctor."""

import subprocess
import sys
from pathlib import Path

import pytest

from course import checkpoints, cli, doctor, parity, zoo
from course.pipelines import base


def test_every_zoo_function_resolves():
    for card in zoo.MODELS.values():
        for target in (card.train, card.load, card.evaluate, card.pipeline):
            if target is not None:
                assert callable(zoo.resolve(target)), target


def test_unknown_model_lists_the_known_ones(capsys):
    assert cli.main(["eval", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err
    for name in zoo.MODELS:
        assert name in err


def test_eval_record_refuses_a_quick_or_outside_evaluation_before_evaluating(capsys):
    before = Path(checkpoints.MANIFEST_PATH).read_bytes()
    assert cli.main(["eval", "sdxl-shapes-refiner", "--record", "--quick"]) == 2
    assert cli.main(["eval", "sdxl-shapes-refiner", "--record", "--checkpoint", "mine.safetensors"]) == 2
    assert "drop --checkpoint and --quick" in capsys.readouterr().err
    assert Path(checkpoints.MANIFEST_PATH).read_bytes() == before


def test_unknown_model_for_train_and_generate(capsys):
    assert cli.main(["train", "sd9-shapes", "--steps", "1"]) == 2
    assert "Known models" in capsys.readouterr().err
    assert cli.main(["generate", "--model", "nope", "--prompt", "a red circle"]) == 2
    assert "Known models" in capsys.readouterr().err


def test_a_classifier_is_not_a_generator():
    with pytest.raises(KeyError, match="does not generate images"):
        base.load("shapes-classifier")


def test_unknown_parity_component():
    with pytest.raises(KeyError, match="known components: .*ddpm_scheduler"):
        parity.compare("not-a-component")


def test_list_names_every_model(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in zoo.MODELS)


def test_doctor_reports_a_version_mismatch(monkeypatch):
    monkeypatch.setattr(doctor, "_pins", lambda: {"numpy": "0.0.1"})
    findings = doctor.check_versions()
    assert findings[0].status == "fail" and "pip install numpy==0.0.1" in findings[0].fix


def test_doctor_exit_status_follows_failures(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "CHECKS", (lambda: [doctor.Finding("ok", "fine")],))
    assert doctor.run() == 0
    monkeypatch.setattr(doctor, "CHECKS", (lambda: [doctor.Finding("fail", "broken", "do this")],))
    assert doctor.run() == 1
    assert "fix: do this" in capsys.readouterr().out


def test_python_dash_m_course_runs():
    out = subprocess.run([sys.executable, "-m", "course", "list"], capture_output=True, text=True, check=True).stdout
    assert "shapes-classifier" in out


@pytest.mark.slow
def test_accelerate_launch_trains_on_two_cpu_processes(tmp_path):
    """The command line under `accelerate launch`: two data-parallel CPU processes, one result."""
    env = {**__import__("os").environ, "ACCELERATE_USE_CPU": "true"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
        "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "course", "train", "shapes-classifier", "--steps", "4", "--run-dir", str(tmp_path),
        "--no-eval", "--no-progress",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "data-parallel training on 2 processes" in run.stdout
    assert (tmp_path / "shapes-classifier.safetensors").exists()


def test_generate_writes_pngs_and_refuses_negative_prompts_for_unconditional_models(tmp_path, capsys):
    assert cli.main(["generate", "--model", "ddpm-fashion", "--num", "2", "--steps", "3", "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.png"))) == 2
    assert cli.main(["generate", "--model", "ddpm-fashion", "--steps", "3", "--negative-prompt", "x", "--out", str(tmp_path / "n")]) == 2
    assert "does not take negative prompts" in capsys.readouterr().err
    assert cli.main(["generate", "--model", "ddpm-fashion", "--steps", "3", "--sampler", "euler", "--out", str(tmp_path / "s")]) == 2
    assert "no --sampler choice" in capsys.readouterr().err


def test_generate_uses_the_models_recommended_settings_unless_given(tmp_path):
    """No --steps / --guidance: the pipeline's defaults (sd1-shapes: 25 steps, w = 3); given ones are used as is."""
    import numpy as np
    from PIL import Image

    pipe = base.load("sd1-shapes")
    assert (pipe.default_steps, pipe.default_guidance) == (25, 3.0)
    common = ["generate", "--model", "sd1-shapes", "--prompt", "a red circle", "--seed", "3"]
    assert cli.main(common + ["--out", str(tmp_path / "default")]) == 0
    assert cli.main(common + ["--steps", "25", "--guidance", "3", "--out", str(tmp_path / "given")]) == 0
    assert cli.main(common + ["--guidance", "1", "--out", str(tmp_path / "w1")]) == 0
    (a,), (b,), (c,) = (list((tmp_path / d).glob("*.png")) for d in ("default", "given", "w1"))
    a, b, c = (np.asarray(Image.open(p)) for p in (a, b, c))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a, pipe.generate(["a red circle"], seed=3)[0])


def test_generate_sdxl_flags(tmp_path, capsys):
    from PIL import Image

    assert cli.main(["generate", "--model", "sd1-shapes", "--prompt", "a red circle", "--steps", "2",
                     "--crop", "8", "8", "--out", str(tmp_path)]) == 2
    assert "for SDXL models" in capsys.readouterr().err
    assert cli.main(["generate", "--model", "ddpm-fashion", "--steps", "2", "--size", "32", "64", "--out", str(tmp_path / "f")]) == 2
    assert "--size is for text-to-image models" in capsys.readouterr().err
    from course import checkpoints

    manifest = checkpoints.read_manifest()
    if not {"sdxl-shapes", "sdxl-shapes-refiner"} <= set(manifest):
        pytest.skip("sdxl-shapes and its refiner are not shipped yet")
    out = tmp_path / "sdxl"
    assert cli.main(["generate", "--model", "sdxl-shapes", "--prompt", "a red circle", "--steps", "5", "--guidance", "3",
                     "--size", "48", "80", "--original-size", "128", "128", "--crop", "16", "16", "--refine",
                     "--out", str(out)]) == 0
    (png,) = out.glob("*.png")
    assert Image.open(png).size == (80, 48)
    assert cli.main(["generate", "--model", "sdxl-shapes-no-micro", "--prompt", "a red circle", "--steps", "2",
                     "--crop", "8", "8", "--out", str(tmp_path / "nm")]) == 2
    assert "without micro-conditioning" in capsys.readouterr().err


def _subparser(name: str):
    return cli.build_parser()._subparsers._group_actions[0].choices[name]


def test_every_command_has_a_description_and_generate_shows_its_defaults():
    for name in ("doctor", "list", "train", "eval", "generate", "parity", "bench", "student-edition", "fetch-data"):
        assert (_subparser(name).description or "").strip(), f"`{name} --help` has no description"
    help_text = " ".join(_subparser("generate").format_help().split())
    for default in ("the model's recommended number", "the model's recommended scale", "(default: 0)", "(default: 1)",
                    f"(default: {cli.DEFAULT_OUT})"):
        assert default in help_text
    assert "(default: None)" not in help_text and "(default: False)" not in help_text


def test_list_columns_line_up(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(zoo.MODELS)
    for column in (zoo.MODELS[next(iter(zoo.MODELS))].summary,):
        starts = {line.index(zoo.MODELS[line.split()[0]].summary) for line in lines}
        assert len(starts) == 1, f"the summaries start at columns {sorted(starts)}"
    assert len({line.index("chapter") for line in lines}) == 1


def test_bench_rounds_its_floats():
    from course.bench import format_figure

    assert format_figure(0.04548055099985504) == "0.04548"
    assert format_figure(1234.5678) == "1235" and format_figure(0.000012345) == "1.234e-05"
    assert format_figure(10_000) == "10000" and format_figure("skipped") == "skipped"


def noisy_comparison(config, seed):
    """A comparison as diffusers' pipelines run one: a warning, a progress bar, a log line."""
    import logging
    import warnings

    from tqdm import tqdm

    warnings.warn("some library deprecation")
    for _ in tqdm(range(3), desc="denoising"):
        pass
    logging.getLogger("diffusers").warning("a library log line")
    print("a stray print")
    return 1.5e-6


def test_parity_prints_one_clean_table(monkeypatch, capsys):
    monkeypatch.setitem(parity.COMPONENTS, "noisy", f"{__name__}:noisy_comparison")
    assert cli.main(["parity", "ddpm_scheduler", "noisy"]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # no library warnings or progress bars
    lines = out.splitlines()
    assert lines[0].startswith("component") and lines[-1] == "2 of 2 components within 1e-04"
    assert [line.split() for line in lines[1:-1]] == [["ddpm_scheduler", "0.00e+00", "ok"], ["noisy", "1.50e-06", "ok"]]
