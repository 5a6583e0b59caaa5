"""The pipelines (stream, direct, files, alerts): each works over the ports only."""
