"""Koopman autoencoder surrogate (KAE paper, Sec. 3): representations, preprocessing, operator, KAE."""
