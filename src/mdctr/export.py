"""ONNX export of a run's scoring path: encoded arrays in, click probabilities out.

The graph's inputs are the encoder's arrays, one per kind: ``sparse`` (B, categorical) int64,
``seq_<name>`` (B, max_len) int64 per sequence feature, ``dense`` (B, numeric) float32 and
``domain`` (B,) int64 (D = unseen domain -> shared path); the output is ``prob`` (B,).
The batch axis is dynamic. For one domain (``domain=d``) every domain-aware linear layer is
merged into a plain one and the ``domain`` input disappears (it is the constant d).

Every export is checked against eager PyTorch on random rows before anything is written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mdctr.data.batch import Batch
from mdctr.data.cache import atomic_write_bytes
from mdctr.data.schema import InputSpec
from mdctr.nn.domain import merge_domain

log = logging.getLogger(__name__)

TOLERANCE = 1e-5
PARITY_ROWS = 512


class ExportError(RuntimeError):
    """The exported graph does not reproduce the eager model."""


class ScoringGraph(nn.Module):
    """The exported computation: arrays as positional inputs -> probabilities (B,)."""

    def __init__(self, model: nn.Module, sequences: int, domain: int | None) -> None:
        super().__init__()
        self.model, self.sequences, self.domain = model, sequences, domain

    def forward(self, *arrays: torch.Tensor) -> torch.Tensor:
        sparse, *rest = arrays
        sequences, dense = tuple(rest[: self.sequences]), rest[self.sequences]
        if self.domain is None:
            domain = rest[self.sequences + 1]
        else:
            domain = sparse.new_full((sparse.shape[0],), self.domain)  # sparse is (B, 0) without categoricals
        return torch.sigmoid(self.model(Batch(sparse, sequences, dense, domain)))


def input_names(sequence_names: list[str], with_domain: bool = True) -> list[str]:
    """The graph's input names, in order."""
    return ["sparse", *(f"seq_{n}" for n in sequence_names), "dense", *(["domain"] if with_domain else [])]


def random_rows(spec: InputSpec, max_len: list[int], n: int, seed: int = 0) -> Batch:
    """Encoded rows covering every id range: PAD/OOV/known ids, padded sequences, unseen domain."""
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(0, size, (n,), generator=g) for size in spec.categorical], 1)
    sequences = []
    for size, length in zip(spec.sequence, max_len, strict=True):
        ids = torch.randint(1, size, (n, length), generator=g)
        keep = torch.arange(length) < torch.randint(0, length + 1, (n, 1), generator=g)
        sequences.append(torch.where(keep, ids, 0))
    return Batch(
        sparse if spec.categorical else torch.zeros(n, 0, dtype=torch.long),
        tuple(sequences),
        torch.randn(n, spec.numeric, generator=g),
        torch.randint(0, spec.domains + 1, (n,), generator=g),
    )


def _arrays(batch: Batch, with_domain: bool) -> tuple[torch.Tensor, ...]:
    return (batch.sparse, *batch.sequences, batch.dense, *((batch.domain,) if with_domain else ()))


@dataclass(frozen=True)
class Exported:
    """A checked ONNX model: its bytes, input names and the parity it reached."""

    model: bytes
    inputs: list[str]
    max_abs_diff: float


def _to_onnx(graph: ScoringGraph, example: tuple[torch.Tensor, ...], names: list[str]) -> bytes:
    batch = torch.export.Dim("batch", min=1)
    shapes = (tuple({0: batch} for _ in example),)  # one entry: the *arrays varargs
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph,
                example,
                input_names=names,
                output_names=["prob"],
                dynamic_shapes=shapes,
                dynamo=True,
                verbose=False,
            )
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    return program.model_proto.SerializeToString()


def session(model: bytes | str | Path, threads: int = 1):  # noqa: ANN201 (onnxruntime is imported lazily)
    """An ONNX Runtime session on CPU with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def export_model(
    model: nn.Module,
    spec: InputSpec,
    sequence_names: list[str],
    max_len: list[int],
    domain: int | None = None,
    metadata: dict[str, str] | None = None,
) -> Exported:
    """Export ``model`` (optionally merged for one domain) to ONNX and check it against eager;
    ``model`` is put in eval mode.

    Raises ExportError when ONNX Runtime differs from PyTorch by more than 1e-5 on
    ``PARITY_ROWS`` random rows (a second batch size from the one traced).
    """
    import onnx

    model = model.eval()
    if domain is not None:
        model = merge_domain(model, domain).eval()
    with_domain = domain is None
    graph = ScoringGraph(model, len(sequence_names), domain).eval()
    names = input_names(sequence_names, with_domain)
    proto = onnx.load_from_string(
        _to_onnx(graph, _arrays(random_rows(spec, max_len, 64), with_domain), names)
    )
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=value)
    data = proto.SerializeToString()

    rows = random_rows(spec, max_len, PARITY_ROWS, seed=1)
    if domain is not None:
        rows.domain.fill_(domain)
    sess = session(data)
    arrays = dict(zip(names, _arrays(rows, with_domain), strict=True))
    got = sess.run(["prob"], {i.name: arrays[i.name].numpy() for i in sess.get_inputs()})[0]
    with torch.no_grad():
        want = graph(*_arrays(rows, with_domain)).numpy()
    diff = float(np.abs(got - want).max())
    if not diff <= TOLERANCE:
        raise ExportError(f"ONNX export parity check failed: max |onnx - torch| = {diff:.2e} > {TOLERANCE:g}")
    return Exported(data, names, diff)


def write(exported: Exported, out: str | Path) -> None:
    """Write the model atomically."""
    atomic_write_bytes(Path(out), exported.model)
