"""The FCN family: a 1-D fully convolutional network for sequences."""
