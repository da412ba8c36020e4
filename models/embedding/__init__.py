"""The embedding family: metric learning on the convnet's trunk."""
