"""Forward models: the built-in library simulator and mock observations of new systems.

``library`` writes a library in the users' HDF5 schema (``protomatch simulate``); its
physics lives in ``_physics`` (how a system evolves) and ``_emission`` (how it looks).
``observations`` writes mock interferometric FITS images of systems outside a library
(``protomatch observe``), and ``truth`` reads their true parameters back.
"""
