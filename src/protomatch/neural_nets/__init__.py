"""The networks: CNN encoder, Siamese network, autoencoder, and a trained model on disk.

``networks`` defines the architectures; ``trained`` saves and loads weights (safetensors +
JSON) and bundles a network with the preprocessing and normalisation it was trained with.
"""
