"""kaelab: Koopman autoencoders and DMD layer replacement for neural representation dynamics."""

__version__ = "0.1.0"
