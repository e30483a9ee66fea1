"""A network served from its exported ONNX graph with ONNX Runtime: no PyTorch in the serving process.

Trainers save every neural model twice: its weights (safetensors, to retrain or inspect with PyTorch) and its
forward pass as an ONNX graph (`GRAPH_FILE`). `load_forecaster` prefers the graph whenever a bundle has one, so
the inference image carries ONNX Runtime (tens of MB) instead of PyTorch (GBs), a replica idles at a fraction
of the memory and starts faster, and small batches run faster too (benchmarks/RESULTS.md). The exported graph
computes the same forecast as the PyTorch module to float32 rounding (tests/unit/test_exported_graph.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from flts.layout import GRAPH_FILE
from flts.models.base import WindowLayout, read_model_json

INPUT_NAME = "inputs"
OUTPUT_NAME = "forecast"
# Windows per run of a graph: large scoring batches run in chunks that stay in the CPU's caches (a default GRU on
# one thread: ~11,500 windows per CPU-second in chunks of 128-256, ~6,000-8,000 in one pass of 32,768).
GRAPH_CHUNK = 256
# ONNX Runtime's intra-op threads per graph; `configure_threads` sets it before graphs load.
_threads = 1


def configure_threads(threads: int) -> None:
    """Threads each loaded graph may use for one forward pass (the pod's CPU: see the README's serving knobs)."""
    global _threads
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    _threads = threads


def onnx_session(graph: bytes) -> Any:
    """An ONNX Runtime session on the CPU with `configure_threads`' threads and no memory arena (see below)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = _threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


class ExportedForecaster:
    """Any model type whose bundle holds an ONNX graph of its forward pass (scaled window in, scaled forecast out).

    Served, never saved: the bundle it came from is the trainer's. It holds only the runtime's session, without
    ONNX Runtime's memory arena: about 1 MiB per default-size GRU (half of it with the arena), which is what a
    replica holding many identifiers' champions pays per champion.
    """

    def __init__(self, model_type: str, layout: WindowLayout, graph: bytes, params: dict[str, Any]) -> None:
        self.model_type = model_type
        self.layout = layout
        self.params = params
        self._session = onnx_session(graph)

    def predict(self, inputs: np.ndarray, target_times: np.ndarray) -> np.ndarray:
        self.layout.check(inputs, target_times)
        batch = np.ascontiguousarray(inputs, dtype=np.float32)
        if len(batch) <= GRAPH_CHUNK:
            return self._run(batch)
        return np.concatenate(
            [self._run(batch[start : start + GRAPH_CHUNK]) for start in range(0, len(batch), GRAPH_CHUNK)]
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        (forecast,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        return forecast

    @classmethod
    def load(cls, directory: Path) -> ExportedForecaster:
        model_type, layout, params = read_model_json(directory)
        return cls(model_type, layout, (Path(directory) / GRAPH_FILE).read_bytes(), params)


def export_graph(net: Any, layout: WindowLayout, directory: Path) -> None:
    """Write `net`'s forward pass (a torch module in eval mode) as `GRAPH_FILE`, any batch size."""
    import torch

    example = torch.zeros(2, layout.input_seq_len, layout.n_features)
    # The tracer's notes on RNN shapes (the batch axis is dynamic; the rest is fixed by the layout) and the
    # TorchScript exporter's deprecation: the pinned torch of the train image still ships it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(),
            (example,),
            str(Path(directory) / GRAPH_FILE),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            dynamo=False,  # the TorchScript exporter: needs only the onnx package, and handles GRU/LSTM
            opset_version=17,
        )
