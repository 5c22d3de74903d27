"""Downstream tasks: datasets (real layouts + synthetic writers), feature cache, probes, metrics."""
