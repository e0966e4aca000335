"""Matching targets against the library: observations, the index, similarity, the report.

``observation`` reads an observed image into a typed :class:`Observation` and prepares it
on the library's grid; ``index`` embeds the library into a FAISS index; ``conditioned``
embeds the library as seen through an observation's beam and noise; ``match`` finds the best
matches and summarises their parameters (``protomatch match``).
"""
