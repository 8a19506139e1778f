"""Backbone benchmark: every backbone, plain and with MLoRA adapters, on ml1m-gender, 3 seeds.

    python benchmarks/backbones.py                        # -> results/backbones.md / .json / .png
    python benchmarks/backbones.py --speed                # samples/s, one epoch each, idle machine
    python benchmarks/backbones.py --models none@dcnv2 mlora@dcnv2 --seeds 1

Runs accumulate in ``results/backbones-runs.jsonl`` (same machinery and options as
``multidomain.py``). MLoRA sits on every hidden MLP layer; AutoInt and Hiformer have none, so
their adapters sit on the attention projections (queries and values; composite keys and values).
``lr`` and ``fm`` have no dense layer and run plain only. ``Δ WAUC`` compares each MLoRA row
with the plain model of the same backbone.
"""

from __future__ import annotations

from multidomain import main

from mdctr.registry import BACKBONES

TARGETS = {
    "autoint": "+model.lora.targets=['*attention.*.query','*attention.*.value']",
    "hiformer": "+model.lora.targets=['*layers.*.key_up','*layers.*.value_up']",
}
MODELS = tuple(
    spec
    for backbone in BACKBONES
    for spec in (
        f"none@{backbone}",
        *([] if backbone in ("lr", "fm") else [f"mlora@{backbone}{TARGETS.get(backbone, '')}"]),
    )
)

if __name__ == "__main__":
    main("backbones", tasks=("ml1m-gender",), models=MODELS, seeds=3, doc=__doc__)
