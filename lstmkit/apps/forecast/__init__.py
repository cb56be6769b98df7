"""`lstmkit forecast`: multivariate time-series forecasting with an LSTM encoder, against baselines.

config.py    ForecastConfig, one field per command-line flag
windows.py   chronological split, sliding windows inside each part, scaling fitted on train
baselines.py persistence, seasonal naive, linear autoregression (least squares)
metrics.py   MAE, RMSE, MASE and the comparison table
model.py     Forecaster: lstmkit.LSTM encoder + linear head
run.py       the run: data checks, training with checkpoints and --resume, scoring, outputs
plots.py     actual vs predicted on the test span, loss curves
"""
