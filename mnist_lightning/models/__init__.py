"""The model layer: the training recipe (``classifier``), the networks it trains (``nets``), and the exact
epoch metrics it logs (``metrics``)."""
