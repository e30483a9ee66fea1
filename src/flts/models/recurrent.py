"""The neural forecasters (PyTorch): an encoder over the input window and a linear head.

The encoder is the model type: a GRU or an LSTM (recurrent), a temporal convolutional network ("TCN": causal
dilated convolutions with residual connections) or a Transformer encoder ("TRANSFORMER": self-attention over
the window's steps with learned positions). "SEQ2SEQ" is the encoder-decoder LSTM: an LSTM encodes the window
and an LSTM cell, started from its last state, decodes the horizon one step at a time, each step reading the
previous step's output (the first: the last observed targets, or no change), through one head shared by the steps.
Everything else (the forms below, training, saving, the exported
graph inference serves) is shared, so each family trains on the same windows and is scored the same way.

`models.recurrent.form` chooses what the network reads and forecasts. "direct": the scaled window in,
the scaled values out. "residual": the head forecasts the change from each target's last input value (a
skip connection from it, the head starting at zero), so an untrained model is exactly persistence.
"relative": residual, but the encoder reads each target column relative to its last input value and in
units of the window's mean absolute step, and the head forecasts the change in those units: the window's
level and scale are invisible to it, so a level never seen in training (the uplink of a re-planned cell
at a fifth of its old level) is forecast like any other instead of pulled back to the training level.

Training is built for a small CPU budget (one thread per trainer, two trainers on two cores):
the windows become tensors once, batches are gathered from them with a seeded permutation (no
DataLoader, no worker processes), the loss is read back once per epoch, and validation runs in
large batches under inference mode.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from flts.config import NETWORK_MODEL_TYPES, NetworkType, RecurrentConfig
from flts.models.base import RELATIVE_STEP_FLOOR, WindowLayout, read_model_json, run_params, write_model_json
from flts.models.exported import export_graph

if TYPE_CHECKING:
    from flts.settings import TrainSettings
    from flts.train import EpochCallback, LineageData

WEIGHTS_FILE = "weights.safetensors"
PREDICT_CHUNK = 8192
# Attention heads of the Transformer encoder (hidden_size must be a multiple) and the TCN's kernel width.
TRANSFORMER_HEADS = 4
TCN_KERNEL = 3

RecurrentForm = Literal["direct", "residual", "relative"]


class WindowArrays(Protocol):
    """The part of `flts.data.windows.Windows` training reads."""

    @property
    def inputs(self) -> np.ndarray: ...

    @property
    def targets(self) -> np.ndarray: ...


class TemporalConvEncoder(nn.Module):
    """Causal dilated 1-D convolutions (dilations 1, 2, 4, ...) with residual connections; the last step's
    channels summarise the window."""

    def __init__(self, n_features: int, hidden_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.project = nn.Conv1d(n_features, hidden_size, 1)
        self.blocks = nn.ModuleList(
            nn.Conv1d(hidden_size, hidden_size, TCN_KERNEL, dilation=2**layer) for layer in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.project(inputs.transpose(1, 2))
        for block in self.blocks:
            padded = nn.functional.pad(hidden, ((TCN_KERNEL - 1) * block.dilation[0], 0))  # causal: the past only
            hidden = hidden + self.dropout(torch.relu(block(padded)))
        return hidden[:, :, -1]


class TransformerWindowEncoder(nn.Module):
    """A Transformer encoder over the window's steps, with learned positions; the last step summarises."""

    def __init__(self, n_features: int, hidden_size: int, num_layers: int, dropout: float, steps: int) -> None:
        super().__init__()
        if hidden_size % TRANSFORMER_HEADS:
            raise ValueError(f"TRANSFORMER needs hidden_size divisible by {TRANSFORMER_HEADS}, got {hidden_size}")
        self.project = nn.Linear(n_features, hidden_size)
        self.position = nn.Parameter(torch.zeros(1, steps, hidden_size))
        layer = nn.TransformerEncoderLayer(
            hidden_size, TRANSFORMER_HEADS, 2 * hidden_size, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.project(inputs) + self.position)[:, -1]


class RecurrentNet(nn.Module):
    """An encoder (the model type) over all features of the window; its summary forecasts the whole horizon
    (`form`: see the module docstring)."""

    def __init__(
        self,
        cell: NetworkType,
        layout: WindowLayout,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        form: RecurrentForm = "residual",
    ) -> None:
        super().__init__()
        self.recurrent = cell in ("GRU", "LSTM", "SEQ2SEQ")
        self.decoder: nn.LSTMCell | None = None
        self.encoder: nn.Module
        if cell == "SEQ2SEQ":
            self.encoder = nn.LSTM(
                layout.n_features, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
            )
            self.decoder = nn.LSTMCell(layout.n_targets, hidden_size)
        elif cell == "TCN":
            self.encoder = TemporalConvEncoder(layout.n_features, hidden_size, num_layers, dropout)
        elif cell == "TRANSFORMER":
            self.encoder = TransformerWindowEncoder(
                layout.n_features, hidden_size, num_layers, dropout, layout.input_seq_len
            )
        else:
            self.encoder = {"GRU": nn.GRU, "LSTM": nn.LSTM}[cell](
                layout.n_features,
                hidden_size,
                num_layers,
                batch_first=True,
                dropout=dropout if num_layers > 1 else 0.0,
            )
        # The decoder's head forecasts one step from each decoder state; the others' the whole horizon at once.
        outputs = layout.n_targets if self.decoder is not None else layout.output_seq_len * layout.n_targets
        self.head = nn.Linear(hidden_size, outputs)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.horizon = layout.output_seq_len
        self.n_targets = layout.n_targets
        self.form = form
        self.register_buffer("target_indices", torch.tensor(layout.target_indices), persistent=False)
        target_mask = torch.zeros(layout.n_features)
        target_mask[list(layout.target_indices)] = 1.0
        self.register_buffer("target_mask", target_mask, persistent=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        last = inputs[:, -1:]
        if self.form == "relative":
            step = (inputs[:, 1:] - inputs[:, :-1]).abs().mean(dim=1, keepdim=True) + RELATIVE_STEP_FLOOR
            step = torch.where(self.target_mask.bool(), step, torch.ones_like(step))
            inputs = (inputs - last * self.target_mask) / step
        if self.decoder is not None:
            output = self._decode(inputs)
        elif self.recurrent:
            encoded, _ = self.encoder(inputs)
            output = self.head(encoded[:, -1]).view(-1, self.horizon, self.n_targets)
        else:
            output = self.head(self.encoder(inputs)).view(-1, self.horizon, self.n_targets)
        if self.form == "direct":
            return output
        if self.form == "relative":
            output = output * step[:, :, self.target_indices]
        return last[:, :, self.target_indices] + output

    def _decode(self, inputs: torch.Tensor) -> torch.Tensor:
        """SEQ2SEQ: the horizon step by step from the encoder's last state, each step fed the one before."""
        assert self.decoder is not None
        _, (hidden, cell) = self.encoder(inputs)
        state = (hidden[-1], cell[-1])
        step = inputs[:, -1, self.target_indices]  # what the head forecasts: values ("direct") or changes from them
        if self.form != "direct":
            step = torch.zeros_like(step)
        steps = []
        for _ in range(self.horizon):
            state = self.decoder(step, state)
            step = self.head(state[0])
            steps.append(step)
        return torch.stack(steps, dim=1)


def resolve_device(device: str) -> torch.device:
    """ "auto" is CUDA when present and CPU otherwise; anything else is taken as a torch device name."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class RecurrentForecaster:
    """A trained GRU or LSTM with its window layout; predicts on CPU unless moved."""

    def __init__(
        self, model_type: NetworkType, layout: WindowLayout, net: RecurrentNet, params: dict[str, Any]
    ) -> None:
        self.model_type = model_type
        self.layout = layout
        self.net = net.eval()
        self.params = params

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str) -> RecurrentForecaster:
        self.net.to(resolve_device(device))
        return self

    def predict(self, inputs: np.ndarray, target_times: np.ndarray) -> np.ndarray:
        self.layout.check(inputs, target_times)
        batch = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(self.device)
        return _forward(self.net, batch).cpu().numpy()

    def save(self, directory: Path) -> None:
        write_model_json(directory, self.model_type, self.layout, self.params)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.net.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        export_graph(copy.deepcopy(self.net).cpu(), self.layout, directory)

    @classmethod
    def load(cls, directory: Path) -> RecurrentForecaster:
        model_type, layout, params = read_model_json(directory, NETWORK_MODEL_TYPES)
        net = RecurrentNet(model_type, layout, **params["architecture"])  # type: ignore[arg-type]
        net.load_state_dict(load_file(str(directory / WEIGHTS_FILE), device="cpu"))
        return cls(model_type, layout, net, params)  # type: ignore[arg-type]


def _forward(net: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """One forward pass per chunk of PREDICT_CHUNK windows (one in all for usual batches), no autograd."""
    with torch.inference_mode():
        if inputs.shape[0] <= PREDICT_CHUNK:
            return net(inputs)
        return torch.cat([net(chunk) for chunk in inputs.split(PREDICT_CHUNK)])


def _mean_loss(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    was_training = net.training
    net.eval()
    loss = nn.functional.mse_loss(_forward(net, inputs), targets).item()
    net.train(was_training)
    return loss


def _check_windows(name: str, windows: WindowArrays, layout: WindowLayout) -> None:
    expected_inputs = (layout.input_seq_len, layout.n_features)
    expected_targets = (layout.output_seq_len, layout.n_targets)
    if windows.inputs.shape[1:] != expected_inputs or windows.targets.shape[1:] != expected_targets:
        raise ValueError(
            f"{name} windows are {list(windows.inputs.shape)} -> {list(windows.targets.shape)}, "
            f"expected [N, {expected_inputs[0]}, {expected_inputs[1]}] -> "
            f"[N, {expected_targets[0]}, {expected_targets[1]}]"
        )
    if windows.inputs.shape[0] != windows.targets.shape[0]:
        raise ValueError(f"{name} windows: {windows.inputs.shape[0]} inputs but {windows.targets.shape[0]} targets")


def train_recurrent(
    model_type: NetworkType,
    train: WindowArrays,
    validation: WindowArrays,
    layout: WindowLayout,
    config: RecurrentConfig,
    *,
    device: str = "auto",
    num_threads: int = 1,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[RecurrentForecaster, list[dict[str, float]]]:
    """Train a GRU or LSTM with Adam on MSE, early-stopping on validation loss; return it (on CPU) and its history.

    Reproducible for a given seed on CPU: weights and batch order come from seeded generators.
    Early stopping waits `early_stopping_patience` epochs without a better validation loss
    (0 disables it) and the weights of the best epoch are restored either way. With no
    validation windows the training loss is monitored instead. `on_epoch(epoch, record)` gets
    each epoch's record: epoch, train_loss, val_loss, seconds.
    """
    if model_type not in NETWORK_MODEL_TYPES:
        raise ValueError(f"model_type must be one of {NETWORK_MODEL_TYPES}, got {model_type!r}")
    _check_windows("train", train, layout)
    _check_windows("validation", validation, layout)
    if train.inputs.shape[0] == 0:
        raise ValueError("no training windows")
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError("epochs and batch_size must be at least 1")

    torch.set_num_threads(num_threads)
    target_device = resolve_device(device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    batch_order = torch.Generator().manual_seed(config.seed)

    architecture = {
        "hidden_size": config.hidden_size,
        "num_layers": config.num_layers,
        "dropout": config.dropout,
        "form": config.form,
    }
    net = RecurrentNet(model_type, layout, **architecture).to(target_device)
    # The fused kernel (CPU and CUDA) updates every tensor at once: 3x cheaper steps than the default.
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate, fused=True)

    def as_tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32), device=target_device)

    train_x, train_y = as_tensor(train.inputs), as_tensor(train.targets)
    has_validation = validation.inputs.shape[0] > 0
    val_x, val_y = (as_tensor(validation.inputs), as_tensor(validation.targets)) if has_validation else (None, None)

    n_train = train_x.shape[0]
    best_loss, best_state, stale_epochs = float("inf"), None, 0
    history: list[dict[str, float]] = []
    net.train()
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=target_device)
        order = torch.randperm(n_train, generator=batch_order).to(target_device)
        for batch in order.split(config.batch_size):
            batch_y = train_y.index_select(0, batch)
            loss = nn.functional.mse_loss(net(train_x.index_select(0, batch)), batch_y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * batch.shape[0]
        train_loss = loss_sum.item() / n_train
        val_loss = _mean_loss(net, val_x, val_y) if val_x is not None and val_y is not None else train_loss
        record = {
            "epoch": float(epoch),
            "train_loss": train_loss,
            "val_loss": val_loss,
            "seconds": time.perf_counter() - started,
        }
        history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
        if val_loss < best_loss:
            best_loss, stale_epochs = val_loss, 0
            best_state = {name: tensor.detach().clone() for name, tensor in net.state_dict().items()}
        else:
            stale_epochs += 1
            if 0 < config.early_stopping_patience <= stale_epochs:
                break
    if best_state is None:
        raise RuntimeError(f"{model_type} training diverged: no epoch had a finite loss ({history[-1]})")
    net.load_state_dict(best_state)
    params = {"architecture": architecture, "training": config.model_dump(mode="json")}
    return RecurrentForecaster(model_type, layout, net.cpu(), params), history


def fit_lineage(
    model_type: NetworkType, settings: TrainSettings, data: LineageData, on_epoch: EpochCallback
) -> tuple[RecurrentForecaster, dict[str, Any]]:
    """The trainer's fit (flts.models.types): the lineage's train windows, early stopping on its validation ones."""
    hyper = data.config.models.recurrent
    forecaster, history = train_recurrent(
        model_type,
        data.windows["train"],
        data.windows["validation"],
        data.layout,
        hyper,
        device=settings.device,
        num_threads=settings.torch_num_threads,
        on_epoch=on_epoch,
    )
    params = run_params("recurrent", hyper)
    return forecaster, {**params, "epochs_run": len(history), "torch_threads": settings.torch_num_threads}
