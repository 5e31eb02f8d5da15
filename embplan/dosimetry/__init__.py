"""Y-90 dosimetry: kernels, the convolution engine, dose maps, prescription models, metrics.

This floor imports only ``embplan.grid``, ``embplan.nuclides`` and ``embplan.errors`` from the rest of the package.
"""
