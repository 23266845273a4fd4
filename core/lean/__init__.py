"""Plain-torch forward passes of the networks m3fm ships, loading the same weights as their
transformers and timm originals, so that running a model imports neither (seconds of start-up)."""
