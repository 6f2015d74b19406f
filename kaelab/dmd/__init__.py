"""DMD layer replacement on time-delay coordinates (Koopman layers paper)."""
