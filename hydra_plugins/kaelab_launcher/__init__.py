"""Hydra launcher plugin of kaelab (Hydra finds plugins only under the ``hydra_plugins`` namespace).
The work is done in ``kaelab.launcher``."""
