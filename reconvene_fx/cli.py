"""The ``reconvene-fx`` command line: compile a model to a budget, report it, write it out.

Usage::

    reconvene-fx compile torchvision:resnet18 --budget 0.5 -o resnet18.onnx
    reconvene-fx report torchvision:resnet18 --budget 0.5 --input-shape 1,3,64,64
    reconvene-fx report torchvision:resnet18 --macs 0.4 --ignore 'layer4.*' --ignore Linear
    reconvene-fx analyze torchvision:resnet18 --budget 0.1 --method snip

Exit status: 0 on success, 2 for bad command-line input (unknown model, malformed shape,
budget outside (0, 1], unknown output suffix, an ``--ignore`` pattern that matches no
module), 1 when compilation or export fails with a
:class:`~reconvene_fx.errors.ReconveneError` (for instance an unreachable budget). Errors
are one ``reconvene-fx: error: ...`` line on stderr; ``reconvene-fx: note: ...`` lines on
stderr say what was assumed (the input shape) or left undone (no ``-o``). Progress goes to
stderr too, unless ``--quiet``: the library's log lines at INFO level (``[reconvene_fx]
loading MODEL ...``, see :func:`reconvene_fx.log.progress_to_stderr`) and SynFlow's
progress bar. ``--seed`` seeds the model's initial weights as well, so a run repeats.
``--flops`` is the deprecated spelling of ``--macs`` (a ``reconvene-fx: warning:`` line;
removed in the next release).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ._atomic import check_writable
from ._catalog import SCORERS, STRATEGIES
from ._registry import NamedRegistry
from .errors import ArgumentError, ReconveneError
from .loading import ModelSpecError, default_input_shape, load_model, parse_input_shape
from .log import logger, progress_to_stderr

if TYPE_CHECKING:  # torch is imported once a command runs: --help and errors answer fast
    import torch

__all__ = ["OUTPUT_SUFFIXES", "build_parser", "main"]

PROG = "reconvene-fx"
OUTPUT_SUFFIXES = (".onnx", ".pt2", ".pt")
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


class _UsageError(Exception):
    """Bad command-line input; reported as one error line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises instead of printing usage and exiting."""

    def error(self, message: str) -> Any:  # argparse declares NoReturn
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if math.isnan(value) or not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not -(2**63) <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must fit in 64 bits (|S| < 2**63), got {value}")
    return value


def _input_shape(text: str) -> tuple[int, ...]:
    try:
        return parse_input_shape(text)
    except ModelSpecError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _path_ending_in(suffixes: tuple[str, ...], verb: str) -> Callable[[str], Path]:
    """An argparse type: a path whose suffix is one of ``suffixes``."""

    def parse(text: str) -> Path:
        path = Path(text)
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(
                f"cannot {verb} {text!r}: the file name must end in {', '.join(suffixes)}"
            )
        return path

    return parse


_output_path = _path_ending_in(OUTPUT_SUFFIXES, "write")
_plot_path = _path_ending_in(PLOT_SUFFIXES, "draw")


class _HelpFormatter(argparse.HelpFormatter):
    """Ends every option's help with what it assumes when not given: ``(default: X)``,
    ``(flag)`` for an option that takes no value, ``(required)`` for one that must be given.
    A help text that states its default itself (``(default: ...``) is left as it is."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.help == argparse.SUPPRESS or "(default" in text:
            return action.help
        if action.required or not action.option_strings:
            return f"{text} (required)"
        if action.nargs == 0:
            return f"{text} (flag)"
        return f"{text} (default: %(default)s)"


class _Renamed(argparse.Action):
    """The deprecated spelling of an option, hidden from --help: warns, stores its value
    under its own ``dest`` (``main`` moves it to the new option's, or refuses both)."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        warnings.warn(  # attributed to this module, which main shows its warnings of
            f"{option} is deprecated and will be removed in the next release; use {self.new}",
            DeprecationWarning,
            stacklevel=1,
        )
        setattr(namespace, self.dest, values)


class _Refuse(argparse.Action):
    """An option a command does not take: refused with ``reason``, hidden from --help."""

    def __init__(self, option_strings: list[str], dest: str, reason: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.reason = reason

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        raise argparse.ArgumentError(self, self.reason)


def _planning_command(
    commands: Any, name: str, *, help: str, description: str
) -> argparse.ArgumentParser:
    """A subcommand that compiles MODEL: its model, budget and planning options."""
    cmd = commands.add_parser(name, help=help, description=description,
                              formatter_class=_HelpFormatter)  # fmt: skip
    _add_model_options(cmd)
    _add_budget_options(cmd)
    _add_planning_options(cmd)
    return cmd


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``reconvene-fx`` (its ``error`` raises instead of exiting).

    Example:
        >>> args = build_parser().parse_args(["report", "torchvision:resnet18", "--budget", "0.5"])
        >>> args.command, args.budget, args.method, args.ignore
        ('report', 0.5, 'magnitude', [])
    """
    parser = _Parser(prog=PROG, description="Structured pruning at initialization (Reconvene).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    compile_cmd = _planning_command(
        commands,
        "compile",
        help="compile a model to a budget and write it out",
        description="Compile MODEL to the budget, print the totals and write it with -o.",
    )
    compile_cmd.add_argument(
        "-o",
        "--output",
        type=_output_path,
        metavar="PATH",
        help=f"write the compiled model here ({', '.join(OUTPUT_SUFFIXES)}; .pt to train on "
        "with reconvene_fx.load) (default: none, nothing is written)",
    )
    compile_cmd.add_argument(
        "--dynamic-batch",
        action="store_true",
        help="-o *.onnx: a symbolic batch axis (without it: static shapes, as TensorRT prefers)",
    )
    compile_cmd.add_argument(
        "--fp16-weights",
        action="store_true",
        help="-o *.onnx: store weights as float16 (half the file; compute stays float32)",
    )
    compile_cmd.set_defaults(run=_run_compile)
    report_cmd = _planning_command(
        commands,
        "report",
        help="print the per-layer plan for a budget",
        description="Compile MODEL to the budget and print the per-layer table.",
    )
    report_cmd.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON (totals, budget, every layer with the indices of "
        "its kept channels) instead of the table",
    )
    report_cmd.add_argument(
        "--plot",
        type=_plot_path,
        metavar="PATH",
        help="draw per-layer PaI density, sensitivity, PSE selection and widths to PATH "
        '(.png, .svg or .pdf; needs matplotlib: pip install "reconvene-fx[plot]") '
        "(default: none, nothing is drawn)",
    )
    report_cmd.set_defaults(run=_run_report)
    analyze_cmd = commands.add_parser(
        "analyze",
        help="print the per-layer PaI sensitivity table (nothing is pruned)",
        description="Score MODEL with --method and print each layer's density under the "
        "global unstructured mask that keeps the --budget fraction of the conv/linear "
        "weights, its sensitivity and whether it is selected. MACs and latency budgets "
        "are planned by 'report --macs/--latency', not here.",
        formatter_class=_HelpFormatter,
    )
    _add_model_options(analyze_cmd)
    analyze_cmd.add_argument(
        "--budget",
        type=_fraction,
        required=True,
        metavar="B",
        help="fraction of the conv/linear weights the unstructured mask keeps, in (0, 1]",
    )
    for option in ("--macs", "--flops", "--latency"):
        analyze_cmd.add_argument(option, action=_Refuse, reason=_ANALYZE_REFUSES)
    analyze_cmd.set_defaults(run=_run_analyze)
    return parser


_ANALYZE_REFUSES = (
    "analyze rates layers under an unstructured mask that keeps a fraction of the "
    "weights (--budget); it does not plan MACs or latency. For the per-layer plan at a "
    "MACs or latency budget run: reconvene-fx report MODEL --macs M (or --latency L)"
)


def _add_model_options(cmd: argparse.ArgumentParser) -> None:
    """Every command: the model, its example input and how weights are scored."""
    cmd.add_argument(
        "model", metavar="MODEL", help="torchvision:NAME, timm:NAME or path/to/file.py:factory"
    )
    cmd.add_argument(
        "--input-shape",
        type=_input_shape,
        metavar="SHAPE",
        help="shape of the random example input, e.g. 1,3,64,64 (default: the model's "
        "usual, 1,3,224,224 for most; a note on stderr says which was assumed)",
    )
    cmd.add_argument(
        "--method",
        choices=list(SCORERS),
        default="magnitude",
        help="how weights are scored at initialization: "
        f"{_listed(SCORERS)}; those that need labels score random ones here",
    )
    cmd.add_argument(
        "--iterations",
        type=_positive_int,
        metavar="N",
        help="rounds of iterative scoring for synflow (default: 100)",
    )
    cmd.add_argument(
        "--seed",
        type=_seed,
        default=0,
        metavar="S",
        help="seed of the model's initial weights, the example input and the scoring",
    )
    cmd.add_argument(
        "-q", "--quiet", action="store_true", help="no progress lines on stderr (notes and "
        "errors still show)"
    )  # fmt: skip


def _add_budget_options(cmd: argparse.ArgumentParser) -> None:
    """compile and report: at least one of the three limits."""
    none = "(default: none; give at least one of --budget, --macs, --latency)"
    cmd.add_argument("--budget", type=_fraction, metavar="B",
                     help=f"fraction of parameters kept, in (0, 1] {none}")  # fmt: skip
    cmd.add_argument(
        "--macs",
        type=_fraction,
        metavar="M",
        help=f"fraction of conv/linear multiply-accumulates kept, in (0, 1] {none}",
    )
    cmd.add_argument("--flops", action=_Renamed, new="--macs", type=_fraction)
    cmd.add_argument(
        "--latency",
        type=_fraction,
        metavar="L",
        help="fraction of the forward-pass time kept, in (0, 1], measured on this machine "
        f"with --latency-backend {none}",
    )


def _add_planning_options(cmd: argparse.ArgumentParser) -> None:
    """compile and report: how the plan is made."""
    cmd.add_argument(
        "--strategy",
        choices=list(STRATEGIES),
        default="reconvene",
        help=f"how channel widths are allocated: {_listed(STRATEGIES)}",
    )
    cmd.add_argument(
        "--min-width",
        type=_unit_interval,
        default=0.1,
        metavar="F",
        help="no coupled channel group keeps fewer than this fraction of its channels "
        "(0 disables the floor)",
    )
    cmd.add_argument(
        "--allocation",
        choices=("density", "sqrt"),
        default="density",
        help="reconvene widths: match each layer's PaI density, or its square root "
        "(halfway to uniform)",
    )
    cmd.add_argument(
        "--price",
        choices=("macs", "latency"),
        default="macs",
        help="what a channel costs when reconvene sets widths: its MACs, or its time on "
        "--latency-backend, so that slow layers narrow more",
    )
    cmd.add_argument(
        "--composite",
        action="store_true",
        help="keep the unstructured PaI mask on layers that were not narrowed "
        "(the budget then bounds nonzero parameters)",
    )
    cmd.add_argument(
        "--round-to",
        type=_positive_int,
        default=None,
        metavar="N",
        help="round kept channel counts to a multiple of N (default: per channel group "
        "from its width: 8 from 32 channels up, 4 from 16, 2 from 8; 1 keeps any width)",
    )
    cmd.add_argument(
        "--latency-backend",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="where --latency is measured: eager PyTorch or the exported model on "
        "onnxruntime; per-layer times are cached in $RECONVENE_FX_CACHE_DIR or "
        "~/.cache/reconvene_fx",
    )
    cmd.add_argument(
        "--no-reinit",
        dest="reinit",
        action="store_false",
        help="keep the sliced original weights of narrowed layers (without it they are "
        "re-initialized)",
    )
    cmd.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="PATTERN",
        help="modules whose channels are never pruned, one pattern per --ignore: a module "
        "name (a block such as layer4 stands for every layer in it), a glob over module "
        "names (layer4.*) or a class name (Linear, torch.nn.Linear) (default: none)",
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``reconvene-fx`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Example:
        >>> main(["report", "torchvision:resnet18", "--budget", "2"])
        2
    """
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        # a deprecated option's warning (DeprecationWarnings are otherwise hidden)
        warnings.filterwarnings("always", category=DeprecationWarning, module=__name__)
        try:
            args = build_parser().parse_args(argv)
            if getattr(args, "flops", None) is not None:
                if args.macs is not None:
                    raise _UsageError("give --macs, not both --macs and --flops (its old name)")
                args.macs = args.flops
            if args.budget is None and args.macs is None and args.latency is None:
                raise _UsageError("give --budget and/or --macs and/or --latency")
            if args.iterations is not None and args.method != "synflow":
                raise _UsageError("--iterations applies to --method synflow only")
            for target in (getattr(args, "output", None), getattr(args, "plot", None)):
                if target is None:
                    continue
                try:  # before the model is loaded and compiled
                    check_writable(target)
                except OSError as err:
                    raise _UsageError(str(err)) from err
            onnx_only = [getattr(args, k, False) for k in ("dynamic_batch", "fp16_weights")]
            if any(onnx_only) and (args.output is None or args.output.suffix.lower() != ".onnx"):
                raise _UsageError("--dynamic-batch and --fp16-weights apply to -o *.onnx only")
            if getattr(args, "plot", None) is not None:
                _check_matplotlib()
            with progress_to_stderr(not args.quiet):
                return int(args.run(args))
        except SystemExit as stop:  # --help and --version
            return stop.code if isinstance(stop.code, int) else 0
        except (_UsageError, ModelSpecError, ArgumentError) as err:
            return _fail(err, status=2)
        except (ReconveneError, OSError) as err:
            return _fail(err, status=1)
        except KeyboardInterrupt:
            return _fail("interrupted", status=130)


def _run_compile(args: argparse.Namespace) -> int:
    from .reporting import report

    gm, example = _compile(args)
    print(report(gm).summary())
    if args.output is None:
        _note("nothing was written; add -o model.pt to keep the model for training "
              "(reconvene_fx.load reads it back) or -o model.onnx to deploy it")  # fmt: skip
        return 0
    from .emit import export_onnx, save

    with _step(f"writing {args.output}"):
        if args.output.suffix.lower() == ".onnx":
            path = export_onnx(gm, args.output, example, dynamic_batch=args.dynamic_batch,
                               fp16_weights=args.fp16_weights)  # fmt: skip
        else:
            path = save(gm, args.output, example)
    print(f"wrote {path}")
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from .reporting import report

    gm, example = _compile(args)
    rep = report(gm)
    if args.json:
        print(_report_json(args.model, tuple(example[0].shape), rep))
    else:
        print(rep.format_table())
    if args.plot is not None:
        from .plot import plot_report

        with _step(f"drawing {args.plot}"):
            title = f"{args.model}: {rep.strategy} ({rep.method})"
            path = plot_report(rep, args.plot, title=title)
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _report_json(model: str, input_shape: tuple[int, ...], rep: Any) -> str:
    """The report as JSON, with the sorted indices of every layer's kept input and output
    channels (``in_idx``, ``out_idx``, of the original module); lists of numbers on one line.

    Example:
        >>> import torch
        >>> from reconvene_fx import LayerPlan
        >>> lp = LayerPlan(torch.tensor([0, 2]), torch.tensor([1]), 3, 4, 0.5, 1.0, True,
        ...                36, 7, 36, 7)
        >>> class Rep:
        ...     layers = {"0": lp}
        ...     def to_dict(self):
        ...         return {"layers": {"0": {"out_kept": 1}}}
        >>> print(_report_json("m.py:f", (1, 3, 8, 8), Rep()))
        {
          "model": "m.py:f",
          "input_shape": [1, 3, 8, 8],
          "layers": {
            "0": {
              "out_kept": 1,
              "in_idx": [0, 2],
              "out_idx": [1]
            }
          }
        }
    """
    data = {"model": model, "input_shape": list(input_shape), **rep.to_dict()}
    for name, layer in data["layers"].items():
        plan = rep.layers[name]
        layer.setdefault("in_idx", plan.in_idx.tolist())
        layer.setdefault("out_idx", plan.out_idx.tolist())
    text = json.dumps(data, indent=2)
    # a list that indent=2 spread over lines (inside a JSON string a newline is escaped)
    return re.sub(r"\[\n[\d,\s]*\]", lambda m: re.sub(r"\s+", "", m.group()).replace(",", ", "),
                  text)  # fmt: skip


def _check_matplotlib() -> None:
    """--plot without matplotlib: a usage error before any work is done."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise _UsageError('--plot needs matplotlib: pip install "reconvene-fx[plot]"')


def _run_analyze(args: argparse.Namespace) -> int:
    from . import analyze

    model, example = _load(args)
    with _step(f"scoring with {args.method}"):
        try:
            table = analyze(
                model,
                args.budget,
                example,
                method=args.method,
                seed=args.seed,
                progress=not args.quiet,
                method_options=_method_options(args),
            )
        except ValueError as err:
            raise _UsageError(str(err)) from err
    print(table.format_table())
    return 0


def _budget(args: argparse.Namespace) -> Any:
    if args.macs is None and args.latency is None:
        return args.budget
    from . import Budget

    return Budget(params=args.budget, macs=args.macs, latency=args.latency)


def _method_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"iterations": args.iterations} if args.iterations is not None else {}


def _load(args: argparse.Namespace) -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
    """The model, initialized from ``--seed``, and its example input."""
    import torch

    shape = args.input_shape
    if shape is None:
        shape = default_input_shape(args.model)
        _note(f"no --input-shape given: assuming {','.join(map(str, shape))}, the usual input "
              f"of {args.model}; give --input-shape to use another")  # fmt: skip
    generator = torch.Generator().manual_seed(args.seed)
    example = (torch.randn(shape, generator=generator),)
    with _step(f"loading {args.model}"):
        with torch.random.fork_rng(devices=[]):  # the caller's generator is left as it was
            torch.manual_seed(args.seed)
            model = load_model(args.model).eval()
        _check_runs(model, example, args.model)
    return model, example


def _compile(args: argparse.Namespace) -> tuple[torch.fx.GraphModule, tuple[torch.Tensor]]:
    """Load ``args.model``, draw its example input and compile it to the budget."""
    budget = _budget(args)
    model, example = _load(args)
    from . import compile as compile_model

    with _step(f"compiling to budget {_describe(budget)}"):
        try:
            gm = compile_model(
                model,
                budget=budget,
                example_inputs=example,
                method=args.method,
                method_options=_method_options(args),
                strategy=args.strategy,
                composite=args.composite,
                min_width=args.min_width,
                allocation=args.allocation,
                price=args.price,
                progress=not args.quiet,
                seed=args.seed,
                round_to=args.round_to,
                ignore=list(args.ignore),
                reinit=args.reinit,
                latency_backend=args.latency_backend,
            )
        except ValueError as err:  # compile's argument checks
            raise _UsageError(str(err)) from err
    return gm, example


def _note(text: str) -> None:
    """One ``reconvene-fx: note: ...`` line on stderr, also with --quiet."""
    print(f"{PROG}: note: {text}", file=sys.stderr, flush=True)


def _check_runs(model: torch.nn.Module, example: tuple[torch.Tensor], spec: str) -> None:
    """Run ``model`` once, so that an input shape it cannot take is a usage error."""
    import torch

    try:
        with torch.no_grad():
            model(*example)
    except Exception as err:
        shape = ",".join(str(d) for d in example[0].shape)
        raise _UsageError(
            f"{spec} cannot run on an input of shape {shape} ({type(err).__name__}: {err}); "
            "give the shape it expects with --input-shape"
        ) from err


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """Log ``what`` (INFO) when a long step starts, and how long it took when it ends.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with progress_to_stderr(True, stream=out), _step("loading m.py:f"):
        ...     pass
        >>> print(out.getvalue(), end="")
        [reconvene_fx] loading m.py:f ...
        [reconvene_fx] loading m.py:f: done in 0.0 s
    """
    logger.info("%s ...", what)
    start = time.perf_counter()
    yield
    logger.info("%s: done in %.1f s", what, time.perf_counter() - start)


def _describe(budget: Any) -> str:
    if isinstance(budget, float):
        return f"params {budget:g}"
    parts = [f"{k} {v:g}" for k, v in budget.limits().items() if v is not None]
    return ", ".join(parts)


def _fail(err: object, *, status: int) -> int:
    message = " ".join(str(err).split()) or type(err).__name__
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return status


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    text = " ".join(str(message).split())
    print(f"{PROG}: warning: {text}", file=sys.stderr if file is None else file)


def _listed(registry: NamedRegistry[Any]) -> str:
    """Each name of ``registry`` with its summary, for ``--help`` (the registries of
    ``reconvene_fx.scoring`` and ``reconvene_fx.strategies``, read without importing torch:
    a scorer or strategy registered before the parser is built is listed too).

    Example:
        >>> _listed(STRATEGIES).split("; ")[1]
        'uniform (every coupled channel group loses the same fraction)'
    """
    entries = [f"{name} ({registry.summary(name)})" if registry.summary(name) else name
               for name in registry]  # fmt: skip
    return "; ".join(entries).replace("%", "%%")  # argparse formats help with %


def _version() -> str:
    """The version of the package that runs (not of an install's stale metadata)."""
    from . import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
