"""mdctr on the shared split: the user's path (a config naming the three CSV files, then
``train_experiment``), run in mdctr's own virtual environment like any peer.

Preprocessing seconds are mdctr's own figure: reading the CSVs, checking them, fitting the
vocabularies and encoding all three splits into training-ready tensors. The domain column is
mdctr's domain field (in ``ml1m-gender`` it repeats ``gender``). ``--bf16``: ``train.precision:
bf16`` (the training forward pass under bfloat16 autocast).
"""

from __future__ import annotations

from common import (
    BATCH,
    CATEGORICAL,
    DROPOUT,
    EMBEDDING_DIM,
    HIDDEN,
    LR,
    PATIENCE,
    SEQUENCE,
    SEQUENCE_LEN,
    SEQUENCE_SEP,
    parse_args,
    seed_everything,
    write_result,
)

from mdctr.config import parse_experiment
from mdctr.pipeline import train_experiment


def main() -> None:
    args = parse_args(__doc__, bf16=True)
    seed_everything(args.seed, args.threads)
    experiment = parse_experiment(
        {
            "name": f"peers-{args.model}",
            "data": {
                "path": str(args.data / "train.csv"),
                "valid_path": str(args.data / "valid.csv"),
                "test_path": str(args.data / "test.csv"),
                "label": "label",
                "domain": "domain",
                "user": "user_id",
                "features": [
                    *({"name": n} for n in CATEGORICAL),
                    {
                        "name": SEQUENCE,
                        "kind": "sequence",
                        "max_len": SEQUENCE_LEN,
                        "sep": SEQUENCE_SEP,
                    },
                ],
            },
            "model": {
                "backbone": args.model,
                "multidomain": "none",
                "embedding_dim": EMBEDDING_DIM,
                "hidden": list(HIDDEN),
                "dropout": DROPOUT,
            },
            "train": {
                "epochs": args.max_epochs,
                "batch_size": BATCH,
                "lr": LR,
                "patience": PATIENCE,
                "seed": args.seed,
                "precision": "bf16" if args.bf16 else "fp32",
            },
        }
    )
    result = train_experiment(experiment, args.work / "run", overwrite=True)
    metrics = result.metrics
    per_domain = {name: d["auc"] for name, d in metrics["domains"].items()}
    history = [
        {
            "epoch": h["epoch"],
            "seconds": h["seconds"],
            "samples_per_s": h["samples_per_s"],
            "valid_auc": h["valid_auc"],
        }
        for h in result.state.history
    ]
    quality = {
        "auc": metrics["overall"]["auc"],
        "logloss": metrics["overall"]["logloss"],
        "domain_auc": per_domain,
        "wauc": metrics["wauc"],
    }
    library = "mdctr-bf16" if args.bf16 else "mdctr"
    write_result(args, library, quality, history, result.preprocess_s, result.params)


if __name__ == "__main__":
    main()
