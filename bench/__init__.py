"""augbench command-line harness: recipe -> pretrain -> tasks -> results -> leaderboard -> CI gate."""

__version__ = "0.1.0"
