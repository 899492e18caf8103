"""One-call GPU check of the ``triton`` formulation: exactness on CUDA, then its speed.

Usage, from the checkout on a CUDA machine: ``PYTHONPATH=src python benchmarks/triton_gpu_check.py``.
Prints, as it goes (so a run cut short still reports what it measured):

1. the largest relative error of the forward and of every gradient (input, kernels, bias, attention
   parameters) of ``triton`` against ``grouped``, fp32 with TF32 off, and under bf16 autocast against
   the fp32 result (with ``grouped`` under bf16 autocast beside it for scale);
2. the FMD ResNet-18 training step (forward, mean of the logits, backward; 224x224, batch 64, torch's
   default TF32 settings) with each formulation forced, as ratios to the static ResNet-18, CUDA events,
   medians, and the peak memory; then bf16 autocast;
3. forward+backward of one FMDConv layer (n = 4) at each ResNet-18 stage shape, per formulation.

``--smoke`` runs the same code on tiny shapes (on CPU with ``TRITON_INTERPRET=1``) to check the script.
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn

from fmdconv import FMDConv2d, ODConv2d, create_model, set_formulation, set_temperature
from fmdconv.layers.triton_conv import triton_version
from fmdconv.utils.machine import machine_line, machine_record
from fmdconv.utils.timing import time_interleaved

START = time.perf_counter()
FORMULATIONS = ("triton", "mixed", "grouped", "auto")


def log(*parts: object) -> None:
    print(f"[{time.perf_counter() - START:6.1f}s]", *parts, flush=True)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.float().abs().max().clamp_min(1e-12)
    return ((actual.float() - expected.float()).abs().max() / scale).item()


def randomised(layer: nn.Module) -> nn.Module:
    """Attentions that vary across samples (as in tests/test_layers.py)."""
    with torch.no_grad():
        for parameter in layer.parameters():
            if parameter.dim() <= 2 and parameter is not layer.weight:
                parameter.normal_(0, 0.5)
    set_temperature(layer, gate=1.5, kernel=0.7)
    return layer


def forward_and_gradients(
    layer: nn.Module, x: torch.Tensor, upstream: torch.Tensor, formulation: str, bf16: bool
) -> dict[str, torch.Tensor]:
    layer.formulation = formulation
    autocast = torch.autocast(x.device.type, torch.bfloat16) if bf16 else nullcontext()
    with autocast:
        y = layer(x)
    leaves = {"x": x, **{name: p for name, p in layer.named_parameters() if p.requires_grad}}
    grads = torch.autograd.grad(y, list(leaves.values()), upstream.to(y.dtype), allow_unused=True)
    results = {"forward": y.detach()}
    results.update({f"d {name}": g for name, g in zip(leaves, grads, strict=True) if g is not None})
    return results


def check_exactness(device: torch.device, smoke: bool) -> None:
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    cases = [  # method, C_in, C_out, kernel, stride, groups, batch, size, bias
        (FMDConv2d, 64, 64, 3, 1, 1, 4, 14, False),
        (FMDConv2d, 32, 64, 3, 2, 1, 3, 15, True),
        (FMDConv2d, 32, 64, 1, 2, 1, 4, 14, False),
        (ODConv2d, 16, 32, 3, 1, 2, 3, 9, True),
        (ODConv2d, 32, 32, 3, 1, 32, 2, 11, False),
    ]
    if smoke:
        cases = [(m, min(i, 4), min(o, 4), k, s, min(g, 2), 2, 5, b) for m, i, o, k, s, g, _, _, b in cases]
    modes = [False] if device.type == "cpu" else [False, True]
    for method, c_in, c_out, kernel, stride, groups, batch, size, bias in cases:
        torch.manual_seed(0)
        layer = randomised(
            method(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=bias, kernel_num=4)
        ).to(device)
        x = torch.randn(batch, c_in, size, size, device=device, requires_grad=True)
        upstream = torch.randn_like(layer(x))
        expected = forward_and_gradients(layer, x, upstream, "grouped", bf16=False)
        name = f"{method.__name__}({c_in}, {c_out}, k={kernel}, s={stride}, g={groups}, bias={bias})"
        for bf16 in modes:
            actual = forward_and_gradients(layer, x, upstream, "triton", bf16)
            errors = {key: relative_error(actual[key], expected[key]) for key in expected}
            worst = max(errors, key=errors.get)
            line = f"{name} {'bf16' if bf16 else 'fp32'}: forward {errors['forward']:.1e}, "
            line += f"worst gradient {worst} {errors[worst]:.1e}"
            if bf16:
                grouped = forward_and_gradients(layer, x, upstream, "grouped", bf16)
                scale = max(relative_error(grouped[key], expected[key]) for key in expected)
                line += f" (grouped under bf16: worst {scale:.1e})"
            log(line)
    torch.backends.cudnn.allow_tf32 = True


def median_ms(run: Callable[[], object], device: torch.device, warmup: int, iterations: int) -> float:
    """Median ms of ``iterations`` calls after ``warmup`` (CUDA events on a GPU, the wall clock elsewhere)."""
    times = time_interleaved({"run": run}, iterations, device, warmup=warmup, cuda_events=True)["run"]
    return statistics.median(times) * 1e3


def training_step(model: nn.Module, x: torch.Tensor, bf16: bool) -> Callable[[], None]:
    def step() -> None:
        with torch.autocast(x.device.type, torch.bfloat16) if bf16 else nullcontext():
            loss = model(x).float().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def time_models(
    device: torch.device, batch: int, size: int, bf16: bool, formulations: tuple[str, ...], smoke: bool
) -> None:
    torch.manual_seed(0)
    width = 0.125 if smoke else 1.0
    static = create_model("resnet18", conv="static", width=width).to(device)
    fmd = create_model("resnet18", conv="fmd", width=width).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    label = "bf16 autocast" if bf16 else "fp32"
    rows: list[tuple[str, float, float]] = []
    for name in ("static", *formulations, "static again"):
        model = static if name.startswith("static") else fmd
        if not name.startswith("static"):
            set_formulation(fmd, name)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        ms = median_ms(training_step(model, x, bf16), device, *((0, 1) if smoke else (3, 10)))
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        rows.append((name, ms, peak))
        log(f"train step {label} b{batch} {size}x{size}: {name}: {ms:.2f} ms, peak {peak:.2f} GiB")
    static_ms = statistics.mean([ms for name, ms, _ in rows if name.startswith("static")])
    log(f"train step {label}, ratio to static ({static_ms:.2f} ms, mean of the two static runs):")
    for name, ms, peak in rows:
        log(f"  {name:13s} {ms / static_ms:5.2f}x  peak {peak:.2f} GiB")


def time_layers(device: torch.device, batch: int, smoke: bool) -> None:
    shapes = [  # C_in, C_out, input size, stride: ResNet-18's 3x3 convolutions at 224x224
        (64, 64, 56, 1),
        (64, 128, 56, 2),
        (128, 128, 28, 1),
        (128, 256, 28, 2),
        (256, 256, 14, 1),
        (256, 512, 14, 2),
        (512, 512, 7, 1),
    ]
    if smoke:
        shapes = [(4, 4, 6, 1), (4, 8, 6, 2)]
    totals: dict[str, float] = {}
    for c_in, c_out, size, stride in shapes:
        torch.manual_seed(0)
        layer = FMDConv2d(c_in, c_out, 3, stride, 1, bias=False, kernel_num=4).to(device)
        static = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False).to(device)
        x = torch.randn(batch, c_in, size, size, device=device, requires_grad=True)
        upstream = torch.randn_like(static(x))
        cells = []
        for name in ("static", "triton", "grouped", "mixed"):
            module = static if name == "static" else layer
            if name != "static":
                layer.formulation = name

            def run(
                module: nn.Module = module, x: torch.Tensor = x, upstream: torch.Tensor = upstream
            ) -> None:
                module(x).backward(upstream)

            ms = median_ms(run, device, *((0, 1) if smoke else (3, 10)))
            totals[name] = totals.get(name, 0.0) + ms
            cells.append(f"{name} {ms:.3f}")
        log(f"layer {c_in}->{c_out} {size}x{size} s{stride} b{batch} fwd+bwd ms: " + ", ".join(cells))
    log("layers, sum of fwd+bwd ms: " + ", ".join(f"{name} {ms:.2f}" for name, ms in totals.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, to check the script itself")
    parser.add_argument("--budget-s", type=float, default=170.0, help="skip the bf16 step after this")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log(f"machine {machine_line(machine_record(device))}, triton {triton_version()}")
    batch, size = (2, 32) if args.smoke else (64, 224)
    sections = [
        ("exactness", lambda: check_exactness(device, args.smoke)),
        ("model fp32", lambda: time_models(device, batch, size, False, FORMULATIONS, args.smoke)),
        ("layers", lambda: time_layers(device, batch, args.smoke)),
    ]
    if device.type == "cuda":
        in_bf16 = ("triton", "mixed")
        sections.append(("model bf16", lambda: time_models(device, batch, size, True, in_bf16, False)))
    for title, section in sections:
        if title == "model bf16" and time.perf_counter() - START > args.budget_s:
            log(f"skipped {title}: over the time budget")
            continue
        try:
            section()
        except Exception:  # report and go on: one call must bring back every section it can
            log(f"section {title} failed:\n{traceback.format_exc()}")


if __name__ == "__main__":
    main()
