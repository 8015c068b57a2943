"""Workstation-side toolchain: trained Keras/PyTorch models become edge-lstm bundles."""
