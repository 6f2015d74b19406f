"""Editing the KAE's Koopman operator. Bottom layer, pure tensor functions: EMMET (``emmet``),
per-class key statistics (``statistics``), Algorithm 1 (``unlearning.unlearn_classes``), the
spectral edit (``spectral``). Variants as classes named by ``_target_``: target rules
(``targets.TargetRule``) and edit strategies (``strategies.EditStrategy``). The ``edit`` group's
schema and its validation (``config``), and the class-unlearning stage (``pipeline``)."""
