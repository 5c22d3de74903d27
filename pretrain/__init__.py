"""Pretraining: backbones, SSL methods, augmentation policies, the training loop and the recipe registry."""
