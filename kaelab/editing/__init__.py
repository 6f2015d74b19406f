"""Editing the KAE's Koopman operator: EMMET (pure function), target strategies, class unlearning stage."""
