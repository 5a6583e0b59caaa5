"""The processing shared by every pipeline: the BatchProcessor, dedup, tokens, backoff, workers, deploy sets, metrics."""
