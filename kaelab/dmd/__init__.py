"""DMD layer replacement on time-delay coordinates (Koopman layers paper, arXiv 2409.01308).

Modules (imported on use; this package stays light because kaelab.config imports its schema):

* ``config``        the ``dmd`` config group schema (DMDConfig, ScalingConfig, GridConfig);
* ``trajectory``    a network as states through depth: prefix -> stages -> head;
* ``layer_scaling`` the paper's layer scaling of a plain MLP (n new layers, Huber loss);
* ``delay``         zero padding, Hankel (delay) embedding, per-sample paired snapshots;
* ``operator``      the PyDMD fit and the explicit low-rank operator U A~ U^T, rolled out in torch;
* ``hybrid``        true layers -> operator over the replaced span -> true layers;
* ``study``         the (h, rank, span) grid of fits and hybrid accuracies;
* ``callback``      ``DMDReplacement``, the Lightning callback (on_fit_end, or ``run`` on a trained model);
* ``pipeline``      ``task=dmd``: the callback on the cached base model.
"""
