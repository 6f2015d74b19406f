"""The topology settings' defaults, shared by the schema (``kaelab.topology.config``) and the
functions that take them (betti.py, backends.py, persistence.py): one default per setting."""

DEFAULT_BACKEND = "mst"  # beta_0: one exact minimum spanning tree gives the whole curve
DEFAULT_H1_BACKEND = "giotto"  # beta_1 when the beta_0 backend computes none (the MST has no cycles)
DEFAULT_COLLAPSE = False  # edge collapse pays only at small eps (kaelab.topology.betti)
MAX_DIM = 1  # beta_0 and beta_1
