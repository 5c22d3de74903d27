"""CI regression gate: compare result files with stored baselines."""
