"""Backbone benchmark: every backbone, plain and with MLoRA adapters, on ml1m-gender, 3 seeds.

    python benchmarks/backbones.py                        # -> results/backbones.md / .json / .png
    python benchmarks/backbones.py --speed                # samples/s, one epoch each, idle machine
    python benchmarks/backbones.py --models none@dcnv2 mlora@dcnv2 --seeds 1

Runs accumulate in ``results/backbones-runs.jsonl`` (same machinery and options as
``multidomain.py``). MLoRA sits on every hidden MLP layer; AutoInt and Hiformer have none, so
their adapters sit on the attention projections (queries and values; composite keys and values).
``lr`` and ``fm`` have no dense layer and run plain only. ``shared_bottom@X`` uses backbone X's
network as the shared bottom under one tower per domain, and ``mmoe@dcnv2`` four DCNv2 networks
as experts (run these with ``--seeds 1``). ``Δ WAUC`` compares each row with the plain model of
the same backbone.
"""

from __future__ import annotations

from multidomain import main

from mdctr.registry import BACKBONES, NO_NETWORK

TARGETS = {
    "autoint": "+model.lora.targets=['*attention.*.query','*attention.*.value']",
    "hiformer": "+model.lora.targets=['*layers.*.key_up','*layers.*.value_up']",
}
MODELS = (
    *(
        spec
        for backbone in BACKBONES
        for spec in (
            f"none@{backbone}",
            *([] if backbone in NO_NETWORK else [f"mlora@{backbone}{TARGETS.get(backbone, '')}"]),
        )
    ),
    *(f"shared_bottom@{backbone}" for backbone in BACKBONES if backbone not in NO_NETWORK),
    "mmoe@dcnv2",
)

if __name__ == "__main__":
    main("backbones", tasks=("ml1m-gender",), models=MODELS, seeds=3, doc=__doc__)
