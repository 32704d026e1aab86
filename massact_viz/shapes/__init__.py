"""The ``shapes`` teaching model: procedural scenes (``scenes``, numpy only), an exact
pixel-space VAE (``vae``), the FLUX.1-style pipeline (``model``) and its rectified-flow
training script (``train``).  This package imports no submodule; import the one you need."""
