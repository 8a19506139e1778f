"""One model per file; every model maps a Batch to logits (B,)."""
