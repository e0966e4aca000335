"""Training the Siamese network on weakly labelled pairs of library images.

``pairs`` splits systems and draws labelled pairs; ``augment`` orients images and draws the
observing conditions (beam, noise) they are seen through; ``losses`` holds the contrastive
and MSE losses; ``config`` the validated training settings (``TrainConfig``, YAML files);
``engine`` runs training (``protomatch train``) and ``history`` records its metrics and
training curve.
"""
