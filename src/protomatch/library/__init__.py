"""The simulated library: file schema, readers, parameters, preprocessing and the store.

``schema`` names the HDF5 layout; ``readers`` reads and validates library files and
catalogs (``formats`` sniffs and reads FITS, ``.npy`` and HDF5); ``preprocess`` turns images
into the store's linear, peak-normalised form and applies the model's intensity stretch;
``params`` normalises the physical parameters (theta) and computes similarity labels;
``ingest`` writes a library into one memory-mapped store, which ``store`` opens.
"""
