"""Character language model: `lstmkit train`, `generate`, `eval` and the `ngram` baseline.

    config.py    the one @dataclass config (every field is a `lstmkit train` flag)
    corpus.py    reading, optional d2l preprocessing, vocabulary, train/validation split
    vocab.py     symbols <-> ids, strict about unknown symbols
    batching.py  d2l random and sequential partitioning, per-rank shards
    model.py     embedding -> lstmkit.LSTM -> dropout -> linear (optionally tied)
    train.py     the training loop (one or many processes), checkpoints, exact resume
    metrics.py   perplexity and bits per character; evaluation
    generate.py  sampling with the state streamed
    ngram.py     interpolated Kneser-Ney n-gram baseline
    runs.py      the run directory's files and loading them back
"""
