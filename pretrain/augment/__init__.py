"""Augmentation: batched per-sample view pipelines and (later) batch-level masking/mixing stages."""
