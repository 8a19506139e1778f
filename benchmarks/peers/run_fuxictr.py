"""FuxiCTR on the shared split, run inside its own virtual environment.

As its run_expid.py does: ``FeatureProcessor`` + ``build_dataset`` (polars + Ray Data, CSV ->
parquet), ``FeatureMap``, ``RankDataLoader`` (parquet through Ray Data) and ``BaseModel.fit``
with its own early stopping and best-checkpoint reload. Its wheel ships no model classes (they
live in the repository's model zoo), so DNN and DeepFM are written here on its ``BaseModel``
with its ``FeatureEmbedding``, ``MLP_Block`` and ``FactorizationMachine``, as the zoo's
files do. Deviations, to keep the protocol's settings: ``reduce_lr_on_plateau`` off (its
default divides the learning rate by 10 after each bad epoch). Kept from FuxiCTR: gradient
clipping at norm 10 inside its ``fit``. Ray is started first with ``num_cpus`` = threads and
no dashboard (its runtime-env agent otherwise can hang preprocessing silently).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import ray
from common import (
    BATCH,
    CATEGORICAL,
    DOMAIN,
    DROPOUT,
    EMBEDDING_DIM,
    HIDDEN,
    LABEL,
    LR,
    PATIENCE,
    SEQUENCE,
    SEQUENCE_LEN,
    SEQUENCE_SEP,
    domain_metrics,
    n_params,
    parse_args,
    seed_everything,
    write_result,
)
from fuxictr.features import FeatureMap
from fuxictr.preprocess import FeatureProcessor, build_dataset
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import BaseModel

DATASET = "peers"


class Timed(BaseModel):
    """BaseModel whose epochs are timed without the validation pass FuxiCTR runs inside them."""

    def fit(self, data_generator, **kwargs) -> None:
        self.history, self._eval_seconds = [], 0.0
        self._rows = data_generator.num_samples
        super().fit(data_generator, **kwargs)

    def train_epoch(self, data_generator) -> None:
        start, before = time.perf_counter(), self._eval_seconds
        super().train_epoch(data_generator)
        seconds = time.perf_counter() - start - (self._eval_seconds - before)
        self.history.append(
            {
                "epoch": len(self.history) + 1,
                "seconds": seconds,
                "samples_per_s": self._rows / seconds,
            }
        )

    def eval_step(self) -> None:
        start = time.perf_counter()
        super().eval_step()
        self._eval_seconds += time.perf_counter() - start


class ZooModel(Timed):
    """The zoo's DeepFM (FM + MLP over the field embeddings); without the FM, its DNN."""

    def __init__(self, feature_map: FeatureMap, use_fm: bool, **kwargs) -> None:
        super().__init__(feature_map, model_id="DeepFM" if use_fm else "DNN", **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, EMBEDDING_DIM)
        self.fm = FactorizationMachine(feature_map) if use_fm else None
        self.mlp = MLP_Block(
            input_dim=feature_map.sum_emb_out_dim(),
            output_dim=1,
            hidden_units=list(HIDDEN),
            hidden_activations="ReLU",
            output_activation=None,
            dropout_rates=DROPOUT,
        )
        self.compile(kwargs["optimizer"], kwargs["loss"], LR)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs: dict) -> dict:
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)
        y_pred = self.mlp(feature_emb.flatten(start_dim=1))
        if self.fm is not None:
            y_pred = y_pred + self.fm(X, feature_emb)
        return {"y_pred": self.output_activation(y_pred)}


def main() -> None:
    args = parse_args(__doc__)
    logging.basicConfig(level=logging.WARNING)
    seed_everything(args.seed, args.threads)
    ray.init(
        num_cpus=args.threads,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    args.work.mkdir(parents=True, exist_ok=True)
    params = {
        "dataset_id": DATASET,
        "data_root": str(args.work),
        "model_root": str(args.work / "checkpoints"),
        "data_format": "csv",
        "feature_cols": [
            {
                "name": list(CATEGORICAL),
                "active": True,
                "dtype": "str",
                "type": "categorical",
            },
            {
                "name": SEQUENCE,
                "active": True,
                "dtype": "str",
                "type": "sequence",
                "splitter": SEQUENCE_SEP,
                "max_len": SEQUENCE_LEN,
                "padding": "post",
            },
        ],
        "label_col": {"name": LABEL, "dtype": "float"},
        "min_categr_count": 1,
        "train_data": str(args.data / "train.csv"),
        "valid_data": str(args.data / "valid.csv"),
        "test_data": str(args.data / "test.csv"),
        "batch_size": BATCH,
        "embedding_dim": EMBEDDING_DIM,
        "optimizer": "adam",
        "loss": "binary_crossentropy",
        "metrics": ["AUC", "logloss"],
        "monitor": "AUC",
        "monitor_mode": "max",
        "early_stop_patience": PATIENCE,
        "reduce_lr_on_plateau": False,
        "epochs": args.max_epochs,
        "verbose": 0,
        "seed": args.seed,
    }
    start = time.perf_counter()
    processor = FeatureProcessor(**params)
    params["train_data"], params["valid_data"], params["test_data"] = build_dataset(processor, **params)
    feature_map = FeatureMap(DATASET, processor.data_dir)
    feature_map.load(processor.json_file, params)
    preprocess_s = time.perf_counter() - start

    model = ZooModel(feature_map, use_fm=args.model == "deepfm", **params)
    Path(model.model_dir).mkdir(parents=True, exist_ok=True)
    train_gen, valid_gen = RankDataLoader(feature_map, stage="train", shuffle=True, **params)
    model.fit(train_gen, validation_data=valid_gen, epochs=args.max_epochs)
    test_gen = RankDataLoader(feature_map, stage="test", shuffle=False, **params)
    prob = model.predict(test_gen)
    test = pd.read_csv(
        args.data / "test.csv",
        usecols=[LABEL, DOMAIN],
        dtype={DOMAIN: str},
        keep_default_na=False,
    )
    metrics = domain_metrics(test[LABEL].to_numpy(np.float64), prob, test[DOMAIN].to_numpy())
    write_result(args, "fuxictr", metrics, model.history, preprocess_s, n_params(model))
    ray.shutdown()


if __name__ == "__main__":
    main()
