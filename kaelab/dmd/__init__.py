"""DMD layer replacement on time-delay coordinates (Koopman layers paper, arXiv 2409.01308).

Modules (imported on use; this package stays light because kaelab.config imports its schema):

* ``config``        the ``dmd`` config group schema (DMDConfig, ScalingConfig, GridConfig);
* ``layer_scaling`` the paper's layer scaling in front of any state's module (n new layers, Huber loss);
  (the network as states through depth is kaelab.models.trajectory.Trajectory, shared by every stage)
* ``delay``         zero padding, Hankel (delay) embedding, per-sample paired snapshots;
* ``operator``      the PyDMD fit and the explicit low-rank operator U A~ U^T, rolled out in torch
                    (saved as ``dmd_operator.safetensors``, reloadable with ``DelayOperator.load``);
* ``hybrid``        true layers -> operator over the replaced span -> true layers;
* ``study``         the (h, rank, span) grid of fits and hybrid accuracies;
* ``callback``      ``DMDReplacement``, the Lightning callback (on_fit_end, or ``run`` on a trained model);
* ``pipeline``      ``task=dmd``: the callback on the cached base model.
"""
