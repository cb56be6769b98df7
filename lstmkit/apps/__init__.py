"""Applications built on lstmkit's modules: each a package with its config, data, model and training."""
