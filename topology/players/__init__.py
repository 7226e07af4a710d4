"""Simulated players for load runs: playback buffers, players per protocol, crowds, reports."""
