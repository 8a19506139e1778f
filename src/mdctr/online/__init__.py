"""The online layer that consumes predicted CTR: adaptive experiments with delayed feedback
(``experiment``), ad / organic blending with GSP and VCG (``auction``) and a learned
encoder-decoder auction (``edgenet``), all on seeded simulators whose truth is known."""
