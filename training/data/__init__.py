"""Training data: on-disk dataset layouts and Diorama's renderer, all yielding `frames.PairedFrames`."""
