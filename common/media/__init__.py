"""The media core: a live Stream of shared frames, and the HLS segmenter; pure, no I/O."""
