"""The demo: a small synthetic data set in the official WIDER FACE layout (``demo.data``)."""
