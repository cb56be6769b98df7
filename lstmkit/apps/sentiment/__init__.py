"""Sentiment classification: a Tree-LSTM on SST (batched with lstmkit.fold) and a
bidirectional LSTM on IMDB reviews. `lstmkit sentiment sst|imdb` runs them."""
