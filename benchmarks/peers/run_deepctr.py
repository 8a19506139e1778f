"""DeepCTR-Torch on the shared split, run inside its own virtual environment.

As its documentation shows: LabelEncoder ids, ``SparseFeat`` / ``VarLenSparseFeat(combiner
"mean")``, ``model.compile("adam", "binary_crossentropy")`` and ``model.fit``. Deviations, to
keep the protocol's settings: L2 on embeddings and the linear part set to 0 (its default is
1e-5); one ``fit(epochs=1)`` call per epoch so the training epoch can be timed apart from
validation, with early stopping on validation AUC around it. DeepCTR-Torch has no plain DNN:
``dnn`` is ``DeepFM(use_fm=False)``, which keeps DeepFM's linear (first-order) part.
"""

from __future__ import annotations

import time

from common import (
    BATCH,
    CATEGORICAL,
    DOMAIN,
    DROPOUT,
    EMBEDDING_DIM,
    EMBEDDING_STD,
    HIDDEN,
    LABEL,
    SEQUENCE,
    SEQUENCE_LEN,
    domain_metrics,
    early_stopping,
    label_encode,
    n_params,
    parse_args,
    read_splits,
    seed_everything,
    write_result,
)
from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat, get_feature_names
from deepctr_torch.models import DeepFM


def main() -> None:
    args = parse_args(__doc__)
    seed_everything(args.seed, args.threads)
    start = time.perf_counter()
    arrays, vocab = label_encode(read_splits(args.data))
    preprocess_s = time.perf_counter() - start

    columns = [SparseFeat(n, vocab[n], embedding_dim=EMBEDDING_DIM) for n in CATEGORICAL] + [
        VarLenSparseFeat(
            SparseFeat(SEQUENCE, vocab[SEQUENCE], embedding_dim=EMBEDDING_DIM),
            SEQUENCE_LEN,
            "mean",
        )
    ]
    names = get_feature_names(columns)
    inputs = {s: {n: arrays[s][n] for n in names} for s in arrays}
    model = DeepFM(
        columns,
        columns,
        use_fm=args.model == "deepfm",
        dnn_hidden_units=HIDDEN,
        dnn_dropout=DROPOUT,
        l2_reg_linear=0.0,
        l2_reg_embedding=0.0,
        init_std=EMBEDDING_STD,
        seed=args.seed,
        device="cpu",
    )
    model.compile("adam", "binary_crossentropy")

    def train_epoch() -> int:
        model.fit(
            inputs["train"],
            arrays["train"][LABEL],
            batch_size=BATCH,
            epochs=1,
            verbose=0,
            shuffle=True,
        )
        return len(arrays["train"][LABEL])

    def metrics(split: str) -> dict:
        return domain_metrics(
            arrays[split][LABEL],
            model.predict(inputs[split], 16384).reshape(-1),
            arrays[split][DOMAIN],
        )

    history = early_stopping(model, train_epoch, lambda: metrics("valid")["auc"], args.max_epochs)
    write_result(args, "deepctr-torch", metrics("test"), history, preprocess_s, n_params(model))


if __name__ == "__main__":
    main()
