"""The names of the files in a run directory, in one place.

```
RUN/config.yaml             the resolved experiment
RUN/vocab.json              schema, vocabularies, numeric scalers, domain names
RUN/model.safetensors       best-validation weights
RUN/checkpoint.safetensors  the latest full training state, for --resume
RUN/metrics.json            test metrics (DESIGN.md contract)
RUN/history.json            per-epoch training log
RUN/run.json                seed, versions, git commit, timings
RUN/report.md, domain_auc.png, curves.png
RUN/selected_features.json  an OptFS search's kept values
RUN/metrics-adapt.json      `mdctr adapt`: the new domain's held-out metrics
RUN/checksums.json          SHA-256 of config, vocab and weights, written last: loading checks it
```
"""

CONFIG = "config.yaml"
VOCAB = "vocab.json"
BEST = "model.safetensors"
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.json"
HISTORY = "history.json"
INFO = "run.json"
REPORT = "report.md"
DOMAIN_PLOT = "domain_auc.png"
CURVES_PLOT = "curves.png"
SELECTION = "selected_features.json"
ADAPT_METRICS = "metrics-adapt.json"
CHECKSUMS = "checksums.json"


def metrics_for(data_stem: str) -> str:
    """The metrics file `mdctr evaluate --data FILE` writes by default."""
    return f"metrics-{data_stem}.json"
