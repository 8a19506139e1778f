"""Score raw rows with nothing but a run directory: the saved vocabularies encode them
(unseen values -> OOV, unseen domain -> shared path), ONNX Runtime or PyTorch scores them."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from mdctr import __version__, layout, runs
from mdctr.data.encode import Encoded
from mdctr.errors import InputError
from mdctr.export import Exported, export_model, session
from mdctr.layout import BEST
from mdctr.train import predict

log = logging.getLogger(__name__)

Backend = Literal["onnx", "torch"]
CHUNK = 65536


def export_run(run: runs.Run, domain: str | None = None) -> Exported:
    """Export a loaded run to ONNX (merged for one domain when ``domain`` names one)."""
    encoder = run.encoder
    index = None
    if domain is not None:
        if domain not in encoder.domains:
            raise InputError(
                f"--domain {domain!r} is not a domain of this run; choose one of {encoder.domains}"
            )
        index = encoder.domains.index(domain)
    sequences = encoder.schema.sequence
    metadata = {
        "mdctr.version": __version__,
        "mdctr.run": run.experiment.name,
        "mdctr.model": f"{run.experiment.model.multidomain}@{run.experiment.model.backbone}",
        "mdctr.domain": "" if domain is None else domain,
        "mdctr.weights_sha256": run.checksums[BEST],
    }
    return export_model(
        run.model,
        encoder.input_spec(),
        [f.name for f in sequences],
        [f.max_len for f in sequences],
        index,
        metadata,
    )


class Predictor:
    """Loads a run directory and scores raw rows (mappings or a polars frame) in order.

    ``backend="onnx"`` exports the run's full multi-domain graph in memory at load time
    (or reads ``onnx_path``, which must come from this run) and scores with ONNX Runtime
    using ``threads`` intra-op threads; ``"torch"`` scores with the eager model on the
    process's torch threads (the caller sets them: ``torch.set_num_threads``).

    Example:
        >>> p = Predictor("runs/demo-ml1m-gender")                       # doctest: +SKIP
        >>> p.predict_records([{"user_id": "1", "item_id": "1193", ...}])  # doctest: +SKIP
    """

    def __init__(
        self,
        run_dir: str | Path,
        backend: Backend = "onnx",
        threads: int = 1,
        onnx_path: str | Path | None = None,
    ) -> None:
        if backend not in ("onnx", "torch"):
            raise InputError(f"backend {backend!r} is unknown; use 'onnx' or 'torch'")
        self.run = runs.load_run(run_dir)
        self.encoder = self.run.encoder
        self.backend, self.threads = backend, threads
        self._session = None
        if backend == "onnx":
            self._session = session(self._onnx_model(onnx_path), threads)
            self._inputs = [i.name for i in self._session.get_inputs()]

    def _onnx_model(self, onnx_path: str | Path | None) -> bytes | Path:
        if onnx_path is None:
            return export_run(self.run).model
        import onnx

        path = Path(onnx_path)
        if not path.is_file():
            raise InputError(f"ONNX file {path} not found; create it with `mdctr export RUN --out {path}`")
        try:
            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception as err:  # noqa: BLE001 (onnx raises several unrelated types for a bad file)
            raise InputError(f"{path} is not an ONNX model ({type(err).__name__}); export it again") from None
        if props.get("mdctr.weights_sha256") != self.run.checksums[BEST]:
            raise InputError(f"{path} was not exported from {self.run.path}; export this run again")
        if props.get("mdctr.domain"):
            raise InputError(
                f"{path} is merged for domain {props['mdctr.domain']!r}; the Predictor needs the "
                f"all-domain graph (export without --domain)"
            )
        return path

    @property
    def domains(self) -> list[str]:
        return self.encoder.domains

    def encode_frame(self, frame: pl.DataFrame, where: str = "input", need_label: bool = False) -> Encoded:
        """Check and encode a table with the run's columns."""
        return self.encoder.encode_table(frame, where, need_label)

    def score(self, encoded: Encoded) -> np.ndarray:
        """Click probabilities (N,) float32 for encoded rows."""
        if self._session is None:
            return predict(self.run.model, encoded, self.run.experiment.train.eval_batch_size)
        parts = []
        for start in range(0, len(encoded), CHUNK):
            arrays = _named_arrays(encoded, self.encoder.sequence, slice(start, start + CHUNK))
            parts.append(self._session.run(["prob"], {name: arrays[name] for name in self._inputs})[0])
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def predict_records(self, records: Sequence[Mapping[str, object]]) -> np.ndarray:
        """Probabilities for raw rows given as mappings of column -> value."""
        return self.score(self.encoder.transform_records(records))

    def predict_frame(self, frame: pl.DataFrame) -> np.ndarray:
        """Probabilities for the rows of a table."""
        return self.score(self.encode_frame(frame))

    def metadata(self) -> dict:
        """What is served: features, domains, model, test metrics, versions."""
        experiment, path = self.run.experiment, self.run.path
        metrics_path = path / layout.METRICS
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
        return {
            "run": experiment.name,
            "version": __version__,
            "model": {
                "backbone": experiment.model.backbone,
                "multidomain": experiment.model.multidomain,
            },
            "backend": self.backend,
            "features": [{"name": f.name, "kind": f.kind} for f in self.encoder.schema.features],
            "domain_columns": list(self.encoder.schema.domain),
            "domains": self.encoder.domains,
            "metrics": metrics,
        }


def _named_arrays(encoded: Encoded, sequence_names: list[str], rows: slice) -> dict[str, np.ndarray]:
    return {
        "sparse": encoded.sparse[rows],
        **{f"seq_{n}": s[rows] for n, s in zip(sequence_names, encoded.sequences, strict=True)},
        "dense": encoded.dense[rows],
        "domain": encoded.domain[rows],
    }
