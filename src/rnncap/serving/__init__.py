"""The web service behind `rnncap serve`: `rnncap.serving.app` and its micro-batcher."""
