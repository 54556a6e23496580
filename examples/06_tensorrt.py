"""Compile for a 4x MAC reduction, write a TensorRT-ready ONNX file and, where TensorRT and
a GPU are present, build an engine from it and time it against the dense model's engine.

Run: python examples/06_tensorrt.py [folder]

Channel counts are kept at multiples of 8 (``round_to=8``: tensor cores and the CPU's
vector units want them); the ONNX file has static shapes, folded constants, float16
weights and the compile's metadata. Without TensorRT (``pip install tensorrt``) or a
CUDA GPU, the engine step is skipped with the reason, and the file is still written and
checked with onnxruntime. The TensorRT step follows the TensorRT 10 Python API; this
project's CI has no GPU, so that part has not run there.
"""

import sys
import tempfile
from pathlib import Path

import torch
import torchvision

import reconvene_fx as rfx


def tensorrt_unavailable() -> str | None:
    """Why no engine can be built here, or None."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install tensorrt)"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


def build_engine(onnx_path: Path, fp16: bool = True) -> bytes:
    """A serialized TensorRT engine of ``onnx_path`` (fp16 kernels where allowed)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {'; '.join(errors)}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path}")
    return bytes(serialized)


def engine_ms(engine_bytes: bytes, x: torch.Tensor, runs: int = 50) -> float:
    """Median GPU milliseconds of one inference of the engine on ``x``."""
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()
    buffers = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            buffers[name] = x.cuda().contiguous()
        else:
            shape = tuple(context.get_tensor_shape(name))
            buffers[name] = torch.empty(shape, device="cuda")
        context.set_tensor_address(name, buffers[name].data_ptr())
    stream = torch.cuda.Stream()
    times = []
    for i in range(runs + 10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        context.execute_async_v3(stream.cuda_stream)
        end.record(stream)
        end.synchronize()
        if i >= 10:  # warm-up runs first
            times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    gm = rfx.compile(model, rfx.Budget(macs=0.25), (x,), round_to=8)
    print(rfx.report(gm).summary())

    dense_path = rfx.export_onnx(model, folder / "dense.onnx", (x,), fp16_weights=True)
    path = rfx.export_onnx(gm, folder / "compiled.onnx", (x,), fp16_weights=True)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; dense "
          f"{dense_path.stat().st_size / 1e6:.1f} MB), checked with onnxruntime")  # fmt: skip

    why_not = tensorrt_unavailable()
    if why_not:
        print(f"TensorRT engine: skipped ({why_not})")
        return
    dense_ms = engine_ms(build_engine(dense_path), x)
    compiled = build_engine(path)
    (folder / "compiled.engine").write_bytes(compiled)
    ms = engine_ms(compiled, x)
    print(f"TensorRT fp16, batch 1: dense {dense_ms:.3f} ms, compiled {ms:.3f} ms "
          f"({dense_ms / ms:.2f}x faster)")  # fmt: skip


if __name__ == "__main__":
    main()
