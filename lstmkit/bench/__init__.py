"""`lstmkit bench`: every LSTM implementation side by side, interleaved, in one process.

`impls` lists the implementations and builds them for a case, `harness` times them, `report`
writes the markdown, JSON and PNG. The command line is `lstmkit.cli.bench`.
"""
