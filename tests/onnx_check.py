"""One ONNX round trip for the export tests: export at batch 2, run at other batch sizes."""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn


def assert_onnx_matches_at_other_batch_sizes(
    model: nn.Module, image_shape: tuple[int, int, int], batches: tuple[int, ...] = (5, 1)
) -> None:
    """Export ``model`` (eval mode) with a dynamic batch axis from a batch of 2 images of
    ``image_shape``, run it in onnxruntime at each of ``batches`` and compare with the model."""
    import onnxruntime

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(2, *image_shape),),
            buffer,
            dynamo=False,
            input_names=["images"],
            output_names=["outputs"],
            dynamic_axes={"images": {0: "batch"}, "outputs": {0: "batch"}},
        )
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for batch in batches:
        x = torch.randn(batch, *image_shape)
        (onnx_out,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            expected = model(x)
        torch.testing.assert_close(torch.from_numpy(onnx_out), expected, atol=1e-5, rtol=1e-4)
