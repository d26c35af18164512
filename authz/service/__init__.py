"""The running service: settings, wiring, lifecycle, ops endpoints, reload, workers, metrics."""
