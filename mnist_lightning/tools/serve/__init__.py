"""``serve``: the classifier over HTTP with LitServe, and the drawing page."""
