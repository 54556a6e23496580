"""Tests of the ``reconvene-fx`` command line, run in-process through ``main``."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import reconvene_fx
import reconvene_fx.cli as cli
from reconvene_fx.cli import main
from reconvene_fx.errors import BudgetError

RESNET = ["torchvision:resnet18", "--input-shape", "1,3,64,64", "--quiet"]
NOTE = "reconvene-fx: note: "


def _without_torch_logs(err: str) -> str:
    """``err`` without torch's own glog-style lines (``W1207 21:32:22.161000 ...``): the
    first import of ``torch.utils.benchmark`` (the torch latency backend's timer) warns
    there on a machine with ``nvcc`` but no CUDA runtime."""
    lines = err.splitlines(keepends=True)
    return "".join(line for line in lines if not re.match(r"[IWEF]\d{4} \d", line))


README = Path(__file__).parent.parent / "README.md"

SMALL_NET = """
import torch

def make():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 10),
    )
"""


@pytest.fixture
def small_net(tmp_path: Path) -> str:
    path = tmp_path / "small_net.py"
    path.write_text(SMALL_NET)
    return f"{path}:make"


def _params(summary: str) -> tuple[int, int]:
    found = re.search(r"params ([\d,]+) -> ([\d,]+)", summary)
    assert found, summary
    before, after = (int(g.replace(",", "")) for g in found.groups())
    return before, after


def _assert_one_error_line(err: str) -> None:
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("reconvene-fx: error: ")]
    assert len(errors) == 1, err
    assert err.rstrip().endswith(errors[0])  # the error is the last thing printed


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["compile", "torchvision:not_a_model", "--budget", "0.5"], "unknown torchvision model"),
        (["compile", "keras:resnet18", "--budget", "0.5"], "cannot read model spec"),
        (["compile", *RESNET, "--budget", "0.5", "--input-shape", "1,3,x"], "input shape"),
        (["compile", *RESNET, "--budget", "0.5", "--input-shape", "1,0,8,8"], "not positive"),
        (["compile", *RESNET, "--budget", "0.5", "--input-shape", "8"], "at least"),
        (["compile", *RESNET, "--budget", "0"], r"--budget: must be in \(0, 1\]"),
        (["compile", *RESNET, "--budget", "1.5"], r"--budget: must be in \(0, 1\]"),
        (["compile", *RESNET, "--budget", "-0.2"], r"--budget: must be in \(0, 1\]"),
        (["compile", *RESNET, "--budget", "nan"], r"--budget: must be in \(0, 1\]"),
        (["compile", *RESNET, "--budget", "half"], "expected a number"),
        (["report", *RESNET, "--budget", "0.5", "--macs", "2"], r"--macs: must be in"),
        (["report", *RESNET, "--budget", "0.5", "--flops", "2"], r"--flops: must be in"),
        (["report", *RESNET, "--macs", "0.5", "--flops", "0.5"], "not both --macs and --flops"),
        (["compile", *RESNET, "--budget", "0.5", "-o", "out.txt"], "must end in .onnx"),
        (["compile", *RESNET, "--budget", "0.5", "--round-to", "0"], "positive integer"),
        (["compile", *RESNET, "--budget", "0.5", "--min-width", "1.5"], r"must be in \[0, 1\]"),
        (["compile", *RESNET, "--budget", "0.5", "--strategy", "none"], "composite=True"),
        (["compile", *RESNET, "--budget", "0.5", "--method", "oracle"], "invalid choice"),
        (["compile", *RESNET], "--budget and/or --macs"),
        (["compile", *RESNET, "--budget", "0.5", "--iterations", "5"], "synflow only"),
        (["compile", *RESNET, "--budget", "0.5", "--seed", str(2**64)], "--seed: must fit in 64"),
        (["compile", *RESNET, "--budget", "0.5", "--seed", "1.5"], "--seed: expected an integer"),
        (["analyze", *RESNET, "--budget", "0.5", "--latency", "0.5"], "does not plan MACs"),
        (["analyze", *RESNET, "--macs", "0.5"], r"--macs: analyze .* report MODEL --macs"),
        (["analyze", *RESNET, "--flops", "0.5"], r"--flops: analyze .* report MODEL --macs"),
        (["analyze", *RESNET], "required: --budget"),
        (
            ["report", *RESNET, "--budget", "0.5", "--ignore", "layer5.*"],
            r"ignore pattern 'layer5\.\*' matches no .* close matches: layer4",
        ),
        (["report", *RESNET, "--budget", "0.5", "--ignore", "Lienar"], "close matches: Linear"),
        (["analyze", *RESNET, "--budget", "0.5", "--composite"], "unrecognized.*--composite"),
        (["frobnicate", *RESNET], "invalid choice"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_input_is_one_error_line_with_status_2(
    args: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    _assert_one_error_line(captured.err)
    assert re.search(match, captured.err), captured.err
    assert captured.out == ""


@pytest.mark.parametrize("budget", ["0", "1.5", "nan"])
def test_budget_is_checked_before_the_model_is_loaded(
    budget: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(spec: str) -> None:
        raise AssertionError("the model was loaded before the budget was checked")

    monkeypatch.setattr(cli, "load_model", fail)
    assert main(["compile", "torchvision:resnet18", "--budget", budget]) == 2
    _assert_one_error_line(capsys.readouterr().err)


def test_reconvene_error_gives_status_1(
    small_net: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def compile_fails(*args: object, **kwargs: object) -> None:
        raise BudgetError(
            "budget 0.1 is unreachable;\nsmallest is 0.3", quantity="params", smallest=0.3
        )

    monkeypatch.setattr(reconvene_fx, "compile", compile_fails, raising=False)
    assert main(["compile", small_net, "--budget", "0.1", "--input-shape", "1,3,8,8"]) == 1
    err = capsys.readouterr().err
    _assert_one_error_line(err)
    assert "reconvene-fx: error: budget 0.1 is unreachable; smallest is 0.3" in err


def test_unreachable_budget_gives_status_1(
    small_net: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The classifier's 10 outputs are protected: its 330 parameters alone exceed 1%.
    assert main(["compile", small_net, "--budget", "0.01", "--input-shape", "1,3,8,8"]) == 1
    _assert_one_error_line(capsys.readouterr().err)


@pytest.fixture
def compile_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The keyword arguments the CLI gives ``reconvene_fx.compile`` (which still runs)."""
    seen: dict[str, object] = {}
    real_compile = reconvene_fx.compile

    def spy(model: object, **kwargs: object) -> object:
        seen.update(kwargs)
        return real_compile(model, **kwargs)

    monkeypatch.setattr(reconvene_fx, "compile", spy)
    return seen


def test_compile_calls_the_api_with_the_options(
    small_net: str, compile_calls: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    seen = compile_calls
    args = ["--budget", "0.9", "--macs", "0.8", "--input-shape", "2,3,8,8", "--seed", "3"]
    args += ["--method", "random", "--strategy", "reconvene", "--round-to", "2", "--no-reinit"]
    args += ["--min-width", "0.2", "--allocation", "sqrt", "--price", "latency"]
    assert main(["compile", small_net, *args, "--ignore", "7", "--composite", "-q"]) == 0
    (x,) = seen.pop("example_inputs")  # type: ignore[misc]
    assert tuple(x.shape) == (2, 3, 8, 8)
    assert seen == {
        "budget": reconvene_fx.Budget(params=0.9, macs=0.8),
        "method": "random",
        "method_options": {},
        "strategy": "reconvene",
        "composite": True,
        "min_width": 0.2,
        "allocation": "sqrt",
        "price": "latency",
        "progress": False,
        "seed": 3,
        "round_to": 2,
        "ignore": ["7"],
        "reinit": False,
        "latency_backend": "torch",
    }
    captured = capsys.readouterr()
    ours = _without_torch_logs(captured.err)
    assert ours.startswith(f"{NOTE}nothing was written")  # --quiet: only the note
    assert ours.count("\n") == 1
    before, after = _params(captured.out)
    assert after <= 0.9 * before


def test_flops_is_the_deprecated_spelling_of_macs(
    small_net: str, compile_calls: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    seen = compile_calls
    argv = ["report", small_net, "--flops", "0.6", "--input-shape", "1,3,8,8", "-q", "--json"]
    with warnings.catch_warnings():  # the library's own code gives none
        warnings.filterwarnings("error", category=DeprecationWarning, module=r"reconvene_fx\b")
        assert main(argv) == 0
    captured = capsys.readouterr()
    assert seen["budget"] == reconvene_fx.Budget(macs=0.6)
    assert captured.err == (
        "reconvene-fx: warning: --flops is deprecated and will be removed in the next "
        "release; use --macs\n"
    )
    data = json.loads(captured.out)  # the JSON has the new keys only
    assert data["budget"] == {"params": None, "macs": 0.6, "latency": None}
    assert data["macs_after"] <= 0.6 * data["macs_before"] and "flops_after" not in data
    assert all("macs_after" in lay and "flops_after" not in lay for lay in data["layers"].values())


def test_file_factory_spec_works(small_net: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", small_net, "--budget", "0.5", "--input-shape", "1,3,16,16"]) == 0
    captured = capsys.readouterr()
    assert f"[reconvene_fx] loading {small_net} ...\n" in captured.err  # progress lines
    for name in ("0", "3", "7"):
        assert re.search(rf"^{name}\s", captured.out, re.MULTILINE), captured.out


def test_compile_resnet18_to_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "x.onnx"
    assert (
        main(
            [
                "compile",
                "torchvision:resnet18",
                "--budget",
                "0.5",
                "--input-shape",
                "1,3,64,64",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert out.is_file() and out.stat().st_size > 0
    before, after = _params(captured.out)
    assert after <= before / 2
    assert str(out) in captured.out
    assert "nothing was written" not in captured.err
    steps = ("loading torchvision:resnet18", "compiling to budget params 0.5", f"writing {out}")
    for step in steps:
        assert f"[reconvene_fx] {step} ...\n" in captured.err
        assert re.search(rf"^\[reconvene_fx\] {re.escape(step)}: done in \d+\.\d s$",
                         captured.err, re.MULTILINE), captured.err  # fmt: skip
    assert "Traceback" not in captured.err


def test_report_resnet18_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", *RESNET, "--budget", "0.5"]) == 0
    table = capsys.readouterr().out
    names = {line.split()[0] for line in table.splitlines() if line.strip()}
    assert {"conv1", "layer1.0.conv1", "fc"} <= names
    before, after = _params(table.splitlines()[-1])
    assert after <= before / 2


def test_report_json_is_the_report_as_data(small_net: str, capsys) -> None:
    argv = ["report", small_net, "--budget", "0.5", "--input-shape", "1,3,16,16", "--json"]
    assert main([*argv, "-q"]) == 0
    data = json.loads(capsys.readouterr().out)  # stdout holds nothing but the JSON
    assert data["model"] == small_net and data["budget"]["params"] == 0.5
    assert set(data["layers"]) == {"0", "3", "7"}
    assert data["params_after"] <= 0.5 * data["params_before"]
    kept = {name: layer["out_kept"] for name, layer in data["layers"].items()}
    assert kept["7"] == 10 and 0 < kept["0"] <= 16
    assert data["input_shape"] == [1, 3, 16, 16]


def test_report_json_has_the_kept_channel_indices(small_net: str, capsys) -> None:
    argv = ["report", small_net, "--budget", "0.4", "--input-shape", "1,3,16,16", "--json", "-q"]
    assert main(argv) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    for layer in layers.values():
        for side in ("in", "out"):
            idx = layer[f"{side}_idx"]
            assert len(idx) == layer[f"{side}_kept"] and idx == sorted(set(idx))
            assert all(0 <= i < layer[f"{side}_channels"] for i in idx)
    # conv 0 -> BatchNorm -> ReLU -> conv 3: the channels 0 keeps are the ones 3 reads
    assert layers["3"]["in_idx"] == layers["0"]["out_idx"]
    assert len(layers["0"]["out_idx"]) < 16  # something was pruned
    assert layers["7"]["out_idx"] == list(range(10))  # the model's outputs are kept
    assert layers["7"]["in_idx"] == layers["3"]["out_idx"]  # pooled and flattened 1x1


def test_report_plot_writes_an_image(small_net: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "plan.png"
    argv = ["report", small_net, "--budget", "0.4", "--input-shape", "1,3,16,16", "-q"]
    assert main([*argv, "--plot", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)
    assert f"wrote {out}" in captured.err
    assert out.read_bytes().startswith(b"\x89PNG") and out.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("plot", "match"),
    [("plan.txt", "must end in .png, .svg, .pdf"), ("blocker/plan.png", "is not a folder")],
)
def test_bad_plot_paths_are_usage_errors_before_compiling(
    small_net: str, tmp_path: Path, plot: str, match: str, capsys
) -> None:
    (tmp_path / "blocker").write_text("")
    argv = ["report", small_net, "--budget", "0.4", "--plot", str(tmp_path / plot)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    _assert_one_error_line(err)
    assert match in err and "loading" not in err


def test_latency_backend_onnxruntime_plans_a_latency_budget(small_net: str, capsys) -> None:
    # --round-to 1: the 16- and 32-channel layers of this tiny net reach 0.7 only at any
    # width (rounded up to steps of 4 and 8 they measure ~0.76 with all that may go gone)
    argv = ["compile", small_net, "--latency", "0.7", "--latency-backend", "onnxruntime",
            "--input-shape", "1,3,32,32", "--round-to", "1", "-q"]  # fmt: skip
    assert main(argv) == 0
    latency = re.search(r"latency (\d+\.\d)%", capsys.readouterr().out)
    assert latency and float(latency.group(1)) <= 70.0


def test_analyze_prints_the_sensitivity_table(
    small_net: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["analyze", small_net, "--budget", "0.3", "--method", "snip", "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out[2:-1]}
    assert set(rows) == {"0", "3", "7"}  # the conv and linear modules of SMALL_NET
    kept, total = (sum(int(r[1].split("/")[i].replace(",", "")) for r in rows.values())
                   for i in (0, 1))  # fmt: skip
    assert abs(kept / total - 0.3) < 0.01
    assert out[-1].startswith("method snip, global density 0.3")


def test_synflow_iterations_and_progress_reach_stderr(
    small_net: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compile", small_net, "--budget", "0.5", "--method", "synflow", "--iterations", "7"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert re.search(r"\[reconvene_fx\] synflow \(float32\): 100%.* 7/7 ", captured.err)
    assert "[reconvene_fx] compiling to budget params 0.5 ..." in captured.err
    before, after = _params(captured.out)
    assert after <= before / 2


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--input-shape", "1,1,8,8"], "cannot run on an input of shape 1,1,8,8"),
        (["--input-shape", "1,3", "-q"], "cannot run on an input of shape 1,3"),
        (["--ignore", "not_a_module"], "not_a_module"),
    ],
)
def test_input_the_model_rejects_is_a_usage_error(
    small_net: str, args: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", small_net, "--budget", "0.5", *args]) == 2
    err = capsys.readouterr().err
    _assert_one_error_line(err)
    assert match in err


def test_ignore_takes_one_pattern_per_flag_and_leaves_the_model() -> None:
    argv = ["report", "--ignore", "layer4.0.conv1", "torchvision:resnet18", "--budget", "1",
            "--ignore", "layer3.*"]  # fmt: skip
    args = cli.build_parser().parse_args(argv)
    assert args.model == "torchvision:resnet18"
    assert args.ignore == ["layer4.0.conv1", "layer3.*"]


SPARE_NET = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
                                        torch.nn.Conv2d(16, 16, 3))
        self.spare = torch.nn.Conv2d(16, 16, 1)  # never called
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))
"""


def test_ignore_patterns_reach_compile_as_given(small_net: str, monkeypatch) -> None:
    seen: dict[str, object] = {}

    def spy(model: object, **kwargs: object) -> object:
        seen.update(kwargs)
        raise BudgetError("stop here", quantity="params", smallest=1.0)

    monkeypatch.setattr(reconvene_fx, "compile", spy)
    argv = ["compile", "--ignore", "Conv2d", small_net, "--ignore", "7", "--budget", "0.5",
            "--input-shape", "1,3,8,8"]  # fmt: skip
    assert main(argv) == 1
    assert seen["ignore"] == ["Conv2d", "7"]  # compile resolves them (see test_compile)


def test_ignore_of_a_module_that_is_never_called_is_an_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "spare.py").write_text(SPARE_NET)
    spec = f"{tmp_path / 'spare.py'}:Net"
    argv = ["compile", spec, "--budget", "0.5", "--input-shape", "1,3,8,8", "-q"]
    assert main([*argv, "--ignore", "spare"]) == 2
    err = capsys.readouterr().err
    _assert_one_error_line(err)
    assert "'spare' matches no prunable layer" in err


def test_ignore_glob_and_class_keep_those_layers_whole(capsys) -> None:
    argv = ["report", "--ignore", "layer4.*", "--ignore", "Linear", *RESNET, "--budget", "0.85",
            "--json"]  # fmt: skip
    assert main(argv) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    whole = [n for n, lay in layers.items() if n.startswith("layer4.") or n == "fc"]
    assert len(whole) == 6
    for name in whole:
        assert layers[name]["out_kept"] == layers[name]["out_channels"], name
    assert layers["layer1.0.conv1"]["out_kept"] < 64  # the rest is pruned


def test_ignore_of_a_module_that_is_no_layer_names_it(small_net: str, capsys) -> None:
    argv = ["report", small_net, "--budget", "0.5", "--input-shape", "1,3,8,8", "--ignore", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    _assert_one_error_line(err)
    assert "'2' matches no prunable layer" in err
    assert "it names a ReLU, whose channels are not planned" in err


def test_compile_without_output_says_how_to_write(small_net: str, capsys) -> None:
    assert main(["compile", small_net, "--budget", "0.5", "--input-shape", "1,3,8,8"]) == 0
    captured = capsys.readouterr()
    _params(captured.out)
    assert "wrote" not in captured.out
    notes = [line for line in captured.err.splitlines() if line.startswith(NOTE)]
    assert len(notes) == 1 and "nothing was written" in notes[0]
    assert "-o model.pt" in notes[0] and "-o model.onnx" in notes[0]
    assert captured.err.rstrip().endswith(notes[0])  # the last line, after the progress


@pytest.mark.parametrize("command", ["compile", "report", "analyze"])
def test_an_assumed_input_shape_is_printed(small_net: str, command: str, capsys) -> None:
    assert main([command, small_net, "--budget", "0.5", "-q"]) == 0
    err = capsys.readouterr().err
    assert f"{NOTE}no --input-shape given: assuming 1,3,224,224" in err
    assert main([command, small_net, "--budget", "0.5", "--input-shape", "1,3,8,8", "-q"]) == 0
    assert "assuming" not in capsys.readouterr().err


def test_seed_fixes_the_model_weights(small_net: str, capsys) -> None:
    argv = ["report", small_net, "--budget", "0.4", "--input-shape", "1,3,16,16", "-q"]
    tables = []
    for global_seed in (1, 2):  # the global generator does not matter, --seed does
        torch.manual_seed(global_seed)
        assert main(argv) == 0
        tables.append(capsys.readouterr().out)
        state = torch.get_rng_state()
        assert main([*argv, "--seed", "5"]) == 0
        assert torch.equal(torch.get_rng_state(), state)  # and is left as it was
        tables.append(capsys.readouterr().out)
    assert tables[0] == tables[2] and tables[1] == tables[3]
    assert tables[0] != tables[1]


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "compile" in capsys.readouterr().out
    assert main(["compile", "--help"]) == 0
    assert "--budget" in capsys.readouterr().out


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    commands = cli.build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    return dict(commands.choices)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", ["compile", "report", "analyze"])
def test_help_gives_every_option_its_default(command: str, capsys) -> None:
    assert main([command, "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    parser = _subcommands()[command]
    formatter = parser._get_formatter()
    documented = 0
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:  # --flops (old name), analyze's refused options
            continue
        for option in action.option_strings or [action.metavar]:
            assert re.search(rf"(^|[\s\[]){re.escape(option)}\b", shown), option
        text = " ".join(formatter._expand_help(action).split())
        assert text in shown, text
        said = re.findall(r"\((default: [^()]*(?:\([^()]*\)[^()]*)*|required|flag)\)$", text)
        assert said, f"{action.option_strings or action.metavar}: {text!r}"
        assert "default: None" not in text and "default: []" not in text
        documented += 1
    hidden = ["--macs", "--flops", "--latency"] if command == "analyze" else ["--flops"]
    assert "--flops" not in shown and documented == len(parser._actions) - len(hidden)
    assert documented >= (8 if command == "analyze" else 20)


def _console_script() -> str:
    found = shutil.which("reconvene-fx") or str(Path(sys.executable).with_name("reconvene-fx"))
    if not Path(found).is_file():
        pytest.skip("the reconvene-fx console script is not installed")
    return found


def test_console_script_reports_errors_without_traceback() -> None:
    result = subprocess.run(
        [_console_script(), "compile", "torchvision:not_a_model", "--budget", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    _assert_one_error_line(result.stderr)
    assert "unknown torchvision model 'not_a_model'" in result.stderr


@pytest.mark.parametrize(
    "argv", [["--help"], ["compile", "--help"], ["compile", "torchvision:resnet18"]]
)
def test_help_and_usage_errors_do_not_import_torch(argv: list[str]) -> None:
    """``--help`` and argument errors answer before torch is imported (a fast start)."""
    code = (
        "import sys\n"
        "from reconvene_fx.cli import main\n"
        f"status = main({argv!r})\n"
        "print(status, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    status, torch_imported = done.stdout.split()[-2:]
    assert status in ("0", "2") and torch_imported == "False", done.stdout + done.stderr


def test_compile_writes_a_tensorrt_ready_onnx(small_net: str, tmp_path: Path, capsys) -> None:
    import onnx

    out = tmp_path / "net.onnx"
    argv = ["compile", small_net, "--budget", "0.5", "--input-shape", "1,3,16,16", "-q",
            "--round-to", "4", "-o", str(out), "--dynamic-batch", "--fp16-weights"]  # fmt: skip
    assert main(argv) == 0
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["reconvene_fx.strategy"] == "reconvene"


def test_onnx_options_need_an_onnx_output(small_net: str, tmp_path: Path, capsys) -> None:
    argv = ["compile", small_net, "--budget", "0.5", "-o", str(tmp_path / "m.pt"), "--fp16-weights"]
    assert main(argv) == 2
    assert "apply to -o *.onnx only" in capsys.readouterr().err


def _quick_start() -> str:
    text = README.read_text()
    start = text.index("## Quick start\n")
    return text[start : text.index("\n## ", start + 1)]


def _readme_command(section: str, prefix: str) -> list[str]:
    """The arguments of the README command line that starts with ``prefix``."""
    lines = [ln for ln in section.splitlines() if ln.startswith(f".venv/bin/reconvene-fx {prefix}")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])[1:]


def test_readme_quick_start_prints_what_it_shows(capsys) -> None:
    section = _quick_start()
    argv = _readme_command(section, "report")
    assert "--method" in argv and argv[argv.index("--method") + 1] in ("magnitude", "synflow")
    shown = re.search(r"prints[^`]*```text\n(.*?)```", section, re.DOTALL)
    assert shown, "the quick start shows no output"
    assert main(argv) == 0
    captured = capsys.readouterr()
    printed = [line.rstrip() for line in captured.out.splitlines()]
    assert printed == shown.group(1).rstrip("\n").splitlines()
    assert "RandomTargetsWarning" not in captured.err and "warning" not in captured.err
    assert f"{NOTE}no --input-shape given: assuming 1,3,224,224" in captured.err


def test_readme_train_after_compile_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    section = _quick_start()
    argv = _readme_command(
        section,
        "compile torchvision:resnet18 --budget 0.25 --method magnitude -o resnet18_pruned.pt",
    )
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code and 'rfx.load("resnet18_pruned.pt")' in code.group(1)
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "-q"]) == 0
    assert "wrote resnet18_pruned.pt" in capsys.readouterr().out
    scope: dict[str, object] = {}
    exec(compile(code.group(1), str(README), "exec"), scope)
    loss = scope["loss"]
    assert isinstance(loss, torch.Tensor) and torch.isfinite(loss)
    gm = scope["gm"]
    assert sum(p.numel() for p in gm.parameters()) <= 0.25 * 11_689_512  # type: ignore[attr-defined]


def test_python_dash_m_runs_the_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "reconvene_fx", "--version"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0
    assert done.stdout.strip() == f"reconvene-fx {reconvene_fx.__version__}"


def test_method_and_strategy_choices_are_the_registries(capsys) -> None:
    """``--method`` and ``--strategy`` list what ``reconvene_fx.scoring`` and
    ``reconvene_fx.strategies`` hold, with a line about each; cli.py keeps no list."""
    from reconvene_fx.scoring import SCORERS, register_scorer
    from reconvene_fx.strategies import STRATEGIES

    @register_scorer("test-cli-ones")
    def ones(gm, example_inputs, targets, *, seed):
        """Every weight scores one."""

    try:
        report = _subcommands()["report"]
        actions = {a.dest: a for a in report._actions}
        assert list(actions["method"].choices) == list(SCORERS)
        assert list(actions["strategy"].choices) == list(STRATEGIES)
        assert main(["report", "--help"]) == 0
        shown = " ".join(capsys.readouterr().out.split())
        assert "test-cli-ones (Every weight scores one.)" in shown
        assert f"uniform ({STRATEGIES.summary('uniform')})" in shown
    finally:
        SCORERS.pop("test-cli-ones")
    source = Path(cli.__file__).read_text()
    assert '"synflow", "' not in source and '"uniform", "' not in source
