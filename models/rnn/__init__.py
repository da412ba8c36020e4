"""The RNN family: masked LSTM or GRU layers for sequences."""
