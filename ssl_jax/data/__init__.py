"""Input pipelines: sources -> views -> host-local batches -> the device mesh."""
