"""The networks: CNN encoder, Siamese network, autoencoder, and a trained model on disk.

``encoder`` defines the configurable CNN encoder (``EncoderConfig``); ``siamese`` the Siamese
network, the autoencoder used for pretraining and device selection; ``trained`` saves and
loads weights (safetensors + JSON) and bundles a network with the preprocessing and
normalisation it was trained with.
"""
