"""Model types behind one interface (`base.Forecaster`, `base.load_forecaster`).

Nothing is re-exported here: the submodules import torch or prophet, which only the services
that use those model types install.
"""
