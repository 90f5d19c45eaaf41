"""The renderer's drawing, split by what it draws: the canvas and assets, the head, the features."""
