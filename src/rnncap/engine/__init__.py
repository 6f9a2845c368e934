"""Training, evaluation and metrics: `rnncap.engine.train`, `.evaluate`, `.metrics`, `.lm_train`."""
