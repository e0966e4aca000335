"""Evaluation on held-out systems and on mock observations (``protomatch evaluate``).

``library`` scores similarity, retrieval and parameter recovery on unseen library systems
against pixel, PCA and random baselines; ``observations`` scores recovery on mock
observations against their ``truth.csv``; ``metrics`` holds the metric functions.
"""
