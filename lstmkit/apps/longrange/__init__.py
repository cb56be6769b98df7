"""`lstmkit longrange`: tasks whose answer lies far back, and why an LSTM solves them where an Elman RNN cannot.

tasks.py   seeded generators: the adding problem, delayed recall (copy), number agreement
models.py  Elman RNN, GRU, LSTM, peephole LSTM (lstmkit modules) with a read-out, matched budgets
train.py   training every model under one budget, stopping on a validation set; held-out metric curves;
           input-gradient norms
plots.py   metric vs length, learning curves, |dL/dx_t| per time step
"""
