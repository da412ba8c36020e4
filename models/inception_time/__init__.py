"""InceptionTime: Inception modules over time (Fawaz et al. 2020)."""
